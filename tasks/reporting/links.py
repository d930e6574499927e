"""Links an operator follows from a Prefect run: the MLflow run and version, the Data Docs.

MLflow URLs exist only when the tracking URI is a server (http/https); with the embedded
SQLite store the link artifact says which command opens the UI instead.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run, or None when the store is not a server."""
    if not is_http(tracking_uri):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def model_version_url(tracking_uri: str, model_name: str, version: str) -> str | None:
    """The MLflow UI page of a registered model version, or None when not a server."""
    if not is_http(tracking_uri):
        return None
    return f"{tracking_uri.rstrip('/')}/#/models/{quote(model_name)}/versions/{version}"


def data_docs_url(docs_index: str | None) -> str | None:
    """A browsable address of the Data Docs index: file:// for a local lake, else as is."""
    if not docs_index:
        return None
    if "://" in docs_index:
        return docs_index
    return Path(docs_index).resolve().as_uri()


def run_links_markdown(
    *,
    as_of: str,
    tracking_uri: str,
    experiment_id: str,
    run_id: str,
    model_name: str,
    version: str,
    alias: str,
    alias_reason: str,
    docs_index: str | None,
    compression: str | None = None,
) -> str:
    """The `nightly-links` artifact: where to look next, and what was decided."""
    run_url = mlflow_run_url(tracking_uri, experiment_id, run_id)
    version_url = model_version_url(tracking_uri, model_name, version)
    docs_url = data_docs_url(docs_index)
    lines = [f"# nightly-retrain {as_of}: links and decisions", ""]
    if run_url:
        lines.append(f"- MLflow run: [{run_id}]({run_url})")
        lines.append(f"- Model version: [{model_name} v{version}]({version_url})")
    else:
        lines.append(
            f"- MLflow run `{run_id}` in `{tracking_uri}` "
            f"(open with `mlflow ui --backend-store-uri {tracking_uri}`)"
        )
    lines.append(f"- Data Docs: [{docs_url}]({docs_url})" if docs_url else "- Data Docs: none")
    lines += [
        "",
        "| decision | value |",
        "|---|---|",
        f"| promotion | @{alias}: {alias_reason} |",
        f"| compression | {compression or 'none (fp32 network)'} |",
    ]
    return "\n".join(lines)

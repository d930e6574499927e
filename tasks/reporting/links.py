"""Links an operator follows from a Prefect run: the MLflow run and version, the Data Docs.

Every link is an http(s) address a browser opens from the Prefect UI (browsers refuse
`file://` links from an http page). With a server tracking URI, MLflow links go to it; with
the embedded SQLite store they go to the local UI `make ui-mlflow` starts (127.0.0.1:5000)
and say so. A local lake's Data Docs go to `nightshift docs` (127.0.0.1:8765), which serves
`<lake>/reports`; an object-store lake's as they are.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"
LOCAL_DOCS = "http://127.0.0.1:8765"
# MLflow 3.17's UI picks its GenAI or model-training view from a global switch (default:
# GenAI) and ignores the experiment's `mlflow.experimentKind` tag; this query selects the
# model-training view for the page a link opens.
TRAINING_VIEW = "?workflowType=machine_learning"


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def mlflow_ui(tracking_uri: str) -> str:
    """The MLflow UI for a tracking URI: the server itself, or the local `make ui-mlflow`."""
    return tracking_uri.rstrip("/") if is_http(tracking_uri) else LOCAL_MLFLOW_UI


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run, in the model-training view."""
    return f"{mlflow_ui(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}{TRAINING_VIEW}"


def mlflow_experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The MLflow UI page of the experiment: its runs, in the model-training view."""
    return f"{mlflow_ui(tracking_uri)}/#/experiments/{experiment_id}/runs{TRAINING_VIEW}"


def model_version_url(tracking_uri: str, model_name: str, version: str) -> str:
    """The MLflow UI page of a registered model version."""
    return f"{mlflow_ui(tracking_uri)}/#/models/{quote(model_name)}/versions/{version}"


def data_docs_url(docs_index: str | None, docs_base: str = LOCAL_DOCS) -> str | None:
    """A browsable address of the Data Docs index.

    A local file under `<lake>/reports/` becomes its address on `nightshift docs`
    (`docs_base`); an object-store URL (s3://, gs://, ...) or http URL stays as it is.
    """
    if not docs_index:
        return None
    if "://" in docs_index and not docs_index.startswith("file://"):
        return docs_index
    parts = Path(docs_index.removeprefix("file://")).parts
    if "reports" not in parts:
        return Path(docs_index).resolve().as_uri()
    below = parts[len(parts) - parts[::-1].index("reports") :]
    return f"{docs_base.rstrip('/')}/{'/'.join(quote(p) for p in below)}"


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
    dataset: str = "",
    docs_base: str = LOCAL_DOCS,
) -> str:
    """The `nightly-links` artifact: where to look next, and what was decided."""
    run_url = mlflow_run_url(tracking_uri, experiment_id, run_id)
    version_url = model_version_url(tracking_uri, model_name, version)
    docs_url = data_docs_url(docs_index, docs_base)
    lines = [f"# nightly-retrain {as_of}: links and decisions", ""]
    lines.append(f"- MLflow run: [{run_id}]({run_url})")
    lines.append(
        f"- MLflow experiment (every night, charts): "
        f"[{experiment_id}]({mlflow_experiment_url(tracking_uri, experiment_id)})"
    )
    lines.append(f"- Model version: [{model_name} v{version}]({version_url})")
    if not is_http(tracking_uri):
        lines.append(
            f"  (start the UI first: `make ui-mlflow`, or "
            f"`mlflow ui --backend-store-uri {tracking_uri} --port 5000`)"
        )
    if docs_url:
        lines.append(f"- Data Docs: [{docs_url}]({docs_url})")
        if docs_url.startswith(docs_base):
            lines.append(f"  (serve them first with `nightshift docs`; file: `{docs_index}`)")
    else:
        lines.append("- Data Docs: none")
    lines += [
        "",
        "| decision | value |",
        "|---|---|",
        f"| dataset | {dataset or '–'} |",
        f"| promotion | @{alias}: {alias_reason.replace('|', chr(92) + '|')} |",
        f"| compression | {compression or 'none (fp32 network)'} |",
    ]
    return "\n".join(lines)

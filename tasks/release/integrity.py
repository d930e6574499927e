"""Registry-held digests of a registered model's files, checked before anything is loaded.

The sha256 manifest inside the artifact (`pyfunc.verify_artifacts`) only vouches for the
files beside it, and whoever can rewrite those can rewrite the manifest too; it also never
covered `python_model.pkl` (unpickled on load) or `code/` (imported on load). So at
registration every file of the version (as the registry hands it out) is hashed and the
result is stored as tags *on the model version*, in the registry database, outside the
artifact store:

- `model_sha256`: one digest over every (relative path, sha256) pair, sorted;
- `model_files_sha256`: the per-file map (JSON), so a refusal can name the file.

A loader that knows the version (the model service, champion scoring, the gate) downloads
the version, compares every file with the tags, and only then lets MLflow unpickle or
import anything. A changed, missing or added file is refused with its path; a version
without the tags (registered outside the pipeline) is refused too.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from tasks.release.pyfunc import TamperedArtifactError, sha256_file

DIGEST_TAG = "model_sha256"
FILES_TAG = "model_files_sha256"
# Written by MLflow's models:/ download itself (name and version), never executed.
MLFLOW_DOWNLOAD_FILES = frozenset({"registered_model_meta"})


class TamperedFileError(TamperedArtifactError):
    """A registered model's file differs from what the registry recorded at registration."""

    def __init__(self, version: str, path: str, problem: str) -> None:
        super().__init__(
            f"file {path!r} of model version {version} {problem}; refusing to load a modified model"
        )
        self.path = path


def file_digests(root: str) -> dict[str, str]:
    """sha256 of every file under `root`, by relative POSIX path (MLflow's own meta aside)."""
    base = Path(root)
    return {
        p.relative_to(base).as_posix(): sha256_file(str(p))
        for p in sorted(base.rglob("*"))
        if p.is_file() and p.relative_to(base).as_posix() not in MLFLOW_DOWNLOAD_FILES
    }


def tree_digest(files: dict[str, str]) -> str:
    """One digest over the whole file map (order-independent)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def verify_files(root: str, version: str, tags: dict[str, str]) -> None:
    """Raise TamperedFileError naming the first file that differs from the version's tags."""
    if DIGEST_TAG not in tags or FILES_TAG not in tags:
        raise TamperedArtifactError(
            f"model version {version} has no {DIGEST_TAG!r}/{FILES_TAG!r} tags (registered "
            "outside the pipeline?); its files cannot be checked, refusing to load it"
        )
    expected: dict[str, str] = json.loads(tags[FILES_TAG])
    if tree_digest(expected) != tags[DIGEST_TAG]:
        raise TamperedArtifactError(
            f"model version {version}: tag {FILES_TAG!r} does not match {DIGEST_TAG!r}"
        )
    actual = file_digests(root)
    for path, digest in sorted(expected.items()):
        if path not in actual:
            raise TamperedFileError(version, path, "is missing")
        if actual[path] != digest:
            raise TamperedFileError(
                version, path, f"has sha256 {actual[path]}, the registry recorded {digest}"
            )
    for path in sorted(set(actual) - set(expected)):
        raise TamperedFileError(version, path, "was not there at registration")


def registry_client(tracking_uri: str) -> MlflowClient:
    """A client of this registry (not MLflow's global URI)."""
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def download_version(tracking_uri: str, name: str, version: str, dst: str) -> str:
    """Download a version's files the way every loader does; the local folder."""
    import mlflow.artifacts

    source = registry_client(tracking_uri).get_model_version_download_uri(name, version)
    return mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=dst, tracking_uri=tracking_uri
    )


def record_digests(tracking_uri: str, name: str, version: str) -> str:
    """Hash the registered version's files and tag the version with them; the digest."""
    client = registry_client(tracking_uri)
    with tempfile.TemporaryDirectory() as scratch:
        files = file_digests(download_version(tracking_uri, name, version, scratch))
    digest = tree_digest(files)
    client.set_model_version_tag(name, version, FILES_TAG, json.dumps(files, sort_keys=True))
    client.set_model_version_tag(name, version, DIGEST_TAG, digest)
    return digest


def download_verified(tracking_uri: str, name: str, version: str, dst: str) -> str:
    """Download a version and check its files against its registry tags; the local folder."""
    local = download_version(tracking_uri, name, version, dst)
    tags = registry_client(tracking_uri).get_model_version(name, version).tags
    verify_files(local, str(version), tags)
    return local


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")


def resolve_version(tracking_uri: str, model_uri: str) -> tuple[str, str] | None:
    """(name, version) of a `models:/<name>/<version>` or `models:/<name>@<alias>` URI.

    None for a URI that is not the registry's (a local folder: nothing to compare with).
    """
    if not model_uri.startswith("models:/"):
        return None
    match = _MODELS_URI.match(model_uri)
    if match is None:
        raise ValueError(
            f"{model_uri}: load registered models by version or alias "
            "(models:/<name>/<version> or models:/<name>@<alias>), so their files can be checked"
        )
    name = match["name"]
    if match["version"]:
        return name, match["version"]
    version = registry_client(tracking_uri).get_model_version_by_alias(name, match["alias"])
    return name, str(version.version)

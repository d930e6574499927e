"""The current champion as a scorer: what a challenger is compared with, on the same rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

CHAMPION, CHALLENGER = "champion", "challenger"

ChampionScorer = Callable[[pd.DataFrame], tuple[str, np.ndarray] | None]


def load_in_process(model_uri: str, tracking_uri: str | None = None):
    """Load a registered pyfunc into this (pipeline) process without changing `sys.path`.

    A registry URI (`models:/<name>/<version>` or `@<alias>`) is downloaded first and every
    file is checked against the version's registry digests (`tasks.release.integrity`)
    before MLflow unpickles `python_model.pkl` or imports `code/`: a tampered file raises
    TamperedFileError naming it. A local folder has only its in-artifact manifest check.

    MLflow puts the model's shipped code (a minimal `tasks` package: what serving needs)
    first on `sys.path` and leaves it there. This process already imports `tasks` from the
    installed project, so the model runs the same code; but every process started later
    from here (the Dask workers of the next flow run, e.g. the next night of a backfill)
    would inherit that path and find the minimal `tasks` package instead of the project.
    """
    import sys
    import tempfile

    import mlflow

    from tasks.release.integrity import download_verified, resolve_version

    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    saved = list(sys.path)
    try:
        registered = resolve_version(tracking_uri, model_uri)
        if registered is None:
            return mlflow.pyfunc.load_model(model_uri)
        # the loaded model keeps nothing open on its files: the folder may go after loading
        with tempfile.TemporaryDirectory(prefix="nightshift-model-") as scratch:
            return mlflow.pyfunc.load_model(download_verified(tracking_uri, *registered, scratch))
    finally:
        sys.path[:] = saved


def champion_scorer(tracking_uri: str, model_name: str) -> ChampionScorer:
    """A function scoring raw rows with the current `@champion` (None when there is none)."""

    def score(rows: pd.DataFrame) -> tuple[str, np.ndarray] | None:
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            version = MlflowClient(tracking_uri).get_model_version_by_alias(model_name, CHAMPION)
        except MlflowException:
            return None
        mlflow.set_tracking_uri(tracking_uri)
        # the version just resolved, not the alias again: it may move in between
        model = load_in_process(f"models:/{model_name}/{version.version}", tracking_uri)
        answer = model.predict(rows)
        return str(version.version), answer.iloc[:, 0].to_numpy()  # MLflow 3: int versions

    return score

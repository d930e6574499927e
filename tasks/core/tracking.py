"""MLflow set-up, once per run, in the flow process (before anything fans out).

Creating a SQLite store from several processes at once races in its migrations, so the
flow process initialises the store and the experiment before trials or ranks log to it.
"""

from __future__ import annotations

from tasks.core.context import RunContext

# The experiment kind MLflow 3's UI reads: "custom_model_development" is its "Machine
# learning" kind, which opens on the runs (model training) instead of the GenAI overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def configure_mlflow(tracking_uri: str, experiment: str, artifact_root: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    elif tracking_uri.startswith(("sqlite:", "file:")):
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_root)
    else:  # a tracking server chooses its own artifact store
        experiment_id = client.create_experiment(experiment)
    # MLflow 3 opens an experiment without a kind on its GenAI overview; this one trains models.
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def with_experiment(ctx: RunContext) -> RunContext:
    """The context with its MLflow experiment id (creating the experiment if needed)."""
    if ctx.experiment_id is not None:
        return ctx
    return ctx.with_(
        experiment_id=configure_mlflow(ctx.tracking_uri, ctx.experiment, ctx.artifact_root)
    )

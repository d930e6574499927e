"""One settings object for every stage: where the lake is and which engines to talk to.

Defaults are embedded (a local folder, a SQLite MLflow store, Prefect's ephemeral API and
a Dask LocalCluster) so `make run` needs no server. Every field can be overridden by an
environment variable `NIGHTSHIFT_<FIELD>` (e.g. `NIGHTSHIFT_MLFLOW_TRACKING_URI`) or by a
`.env`-style profile file named by `NIGHTSHIFT_PROFILE` (default `nightshift.env`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where data lives and which engines run it; read once from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="NIGHTSHIFT_",
        env_file=os.environ.get("NIGHTSHIFT_PROFILE", "nightshift.env"),
        extra="ignore",
    )

    home: Path = Field(
        default=Path(".nightshift"),
        description="Folder for embedded state: the lake, the MLflow store, Prefect's database.",
    )
    lake_root: str | None = Field(
        default=None,
        description="Root of the data lake: a local path or any fsspec URL (s3://bucket/lake). "
        "Default: <home>/lake.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (http://127.0.0.1:5000, postgresql://...). "
        "Default: a SQLite store at <home>/mlflow.db.",
    )
    mlflow_artifact_root: str | None = Field(
        default=None,
        description="Artifact root for new MLflow experiments when the store is SQLite. "
        "Default: <home>/mlartifacts. Ignored by a tracking server (it has its own).",
    )
    mlflow_experiment: str = Field(default="nightshift", description="MLflow experiment name.")
    prefect_api_url: str | None = Field(
        default=None,
        description="Prefect API URL (http://127.0.0.1:4200/api). Default: a private embedded "
        "Prefect server for the duration of the run, its database under <home>/prefect.",
    )
    prefect_server_keep: bool = Field(
        default=True,
        description="Without a Prefect API URL: keep the embedded server the first run starts "
        "and reuse it in the next runs (seconds off every start; `nightshift prefect-server "
        "stop` stops it). false: a private server per run, stopped at its end.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler address (tcp://host:8786). Default: a LocalCluster "
        "(LocalCUDACluster when GPUs and dask-cuda are present).",
    )
    dask_workers: int | None = Field(
        default=None, ge=1, description="Workers of the local cluster. Default: CPU cores (max 4)."
    )
    dask_dashboard_address: str = Field(
        default="127.0.0.1:0",
        description="Where the local cluster's dashboard listens. Default: loopback, a free "
        "port (never all interfaces: the dashboard has no authentication).",
    )
    spark_master: str = Field(default="local[*]", description="Spark master URL.")
    spark_local_java_options: str = Field(
        default="-XX:TieredStopAtLevel=1",
        description="JVM options of a local Spark session (driver and executors in one JVM). "
        "Default: HotSpot's first JIT tier only, which cost a night's short ingest jobs a "
        "third less JVM CPU (BENCHMARKS §30); set '' for long local runs (a year's backfill "
        "at scale), where the optimising compiler's faster code pays for its compiling.",
    )
    model_name: str | None = Field(
        default=None,
        description="Registered model name in the MLflow registry. Default: the dataset's "
        "own (flights: nycflights-delay).",
    )
    seed: int = Field(default=42, description="Seed for every random number generator.")
    schedule_cron: str = Field(
        default="0 2 * * *", description="Cron of the nightly-retrain deployment."
    )
    schedule_timezone: str = Field(
        default="UTC",
        description="IANA time zone of the nightly cron; a scheduled run's as_of is its "
        "scheduled date in this zone.",
    )
    work_pool: str = Field(
        default="nightshift-process", description="Prefect work pool `nightshift deploy` uses."
    )

    task_timeouts_s: dict[str, float] = Field(
        default={},
        description="Per-task overrides of the Prefect task timeouts, by task name, e.g. "
        '{"train-network-ddp": 14400}. Defaults: `tasks.core.settings.TASK_TIMEOUTS_S`.',
    )
    dask_wait_timeout_s: float = Field(
        default=2 * 3600.0,
        gt=0,
        description="Longest wait for a stage's Dask tasks (e.g. ingest's one task per day).",
    )
    ingest_batch_bytes: int = Field(
        default=32 * 2**20,
        gt=0,
        description="Input bytes one Dask ingest task cleans at most: consecutive changed days "
        "are batched up to this size (at least one batch per worker thread), each day still "
        "published as its own generation.",
    )
    ingest_frame_bytes: int = Field(
        default=4 * 2**20,
        gt=0,
        description="Input bytes a Dask ingest task cleans as one pandas frame: a batch's "
        "consecutive days are typed, checked and joined together up to this size, then split "
        "and published day by day. Larger frames pay pandas' per-operation cost less often; "
        "smaller ones hold fewer rows at once.",
    )
    validation_gx_max_rows: int = Field(
        default=100_000,
        ge=0,
        description="Great Expectations (suite results, Data Docs) re-checks the night's "
        "changed clean partitions, newest first, up to this many rows (the newest changed "
        "partition always); every partition is checked natively and its result cached by "
        "content. 0: native checks only, no GX run.",
    )
    validation_gx_background: bool = Field(
        default=True,
        description="Run Great Expectations (suite results, Data Docs) on the night's changed "
        "partitions in a detached process instead of waiting for it: the native checks are "
        "the gate either way; GX's results (or its failure) join the report and the night's "
        "page when it finishes (local lakes; on object storage GX runs inline). false: the "
        "stage waits for GX (its import alone takes seconds) and a rule GX breaks that the "
        "native checks passed fails the run.",
    )
    ddp_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="DDP attempts within one train task: a lost rank re-plans on the workers "
        "that remain and resumes from the last checkpoint.",
    )
    ddp_group_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="torch.distributed process-group timeout: the longest a rank waits for a "
        "peer in a collective (must cover the chief's per-epoch validation and checkpoint).",
    )
    ddp_wait_timeout_s: float = Field(
        default=4 * 3600.0,
        gt=0,
        description="Longest wait for one DDP attempt's ranks to finish.",
    )
    tune_wait_timeout_s: float = Field(
        default=3 * 3600.0,
        gt=0,
        description="Longest wait for the tuning trial batches, beyond the search's own timeout.",
    )
    tune_heartbeat_s: int = Field(
        default=5, ge=1, description="Optuna trial heartbeat interval (RDB study storage)."
    )
    tune_grace_s: int = Field(
        default=20,
        ge=2,
        description="A running trial with no heartbeat for this long is failed and retried.",
    )
    full_retrain_every_days: int = Field(
        default=7,
        ge=0,
        description="Incremental nights: a night fine-tunes the @champion's network when its "
        "lineage's last full retrain is younger than this many days, else retrains in full "
        "(0 = every night in full).",
    )
    fine_tune_epochs: int = Field(
        default=1,
        ge=1,
        le=50,
        description="Epochs of a fine-tune night, from the champion's weights, on the updated "
        "window (its hyperparameters otherwise; no search). 1: on the year's flights one "
        "epoch served the same AUC as two within their rerun spread, with the same gate "
        "decision, in half the training time (BENCHMARKS.md, the one-new-day section).",
    )
    fine_tune_replay_fraction: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Rows a fine-tune night fits: every row the @champion never fitted, and "
        "this fraction of the older ones, drawn with the run's seed (1 = the whole window). "
        "0.25: over eight paired fine-tune nights on the year's flights it served a mean "
        "AUC 0.0006 above the whole window's (four higher, four lower), the same gate "
        "decision on seven, in a third of the training time (BENCHMARKS.md §39).",
    )

    decay_floor_auc: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Continuous evaluation: the @champion's ROC AUC on the days labelled since "
        "its as_of below this emits `nightshift.model.decayed`.",
    )
    decay_max_auc_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Continuous evaluation: the same event when that AUC trails the "
        "champion's own holdout AUC (its `served_roc_auc` tag) by more than this.",
    )
    decay_max_days: int = Field(
        default=31,
        ge=1,
        description="Continuous evaluation scores at most this many of the newest labelled "
        "days after the champion's as_of (a stale champion is not re-scored on a year).",
    )
    retrain_debounce_s: float = Field(
        default=3600.0,
        gt=0,
        description="Event-driven retraining: one triggered nightly run per dataset per this "
        "many seconds, however many decay/drift events arrive.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Dask workers and subprocess servers may run in another working directory.
        return value.expanduser().resolve()

    @field_validator("schedule_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone (UTC, America/New_York)"
            ) from None
        return value

    @property
    def lake_url(self) -> str:
        """The lake root as a string URL or absolute path."""
        return self.lake_root or str(self.home / "lake")

    @property
    def tracking_uri(self) -> str:
        """The effective MLflow tracking URI."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        """Where a new MLflow experiment stores artifacts when the store is embedded."""
        return self.mlflow_artifact_root or (self.home / "mlartifacts").as_uri()

    @property
    def prefect_home(self) -> Path:
        """PREFECT_HOME for the embedded server, so its database stays with the project."""
        return self.home / "prefect"


# Prefect task timeouts (seconds) by task name: generous bounds on a healthy night (the
# full flights set trains in minutes), there so that nothing holds the deployment's slot
# forever. Override per task with NIGHTSHIFT_TASK_TIMEOUTS_S='{"name": seconds}'.
TASK_TIMEOUTS_S: dict[str, float] = {
    "ingest-landed-days": 2 * 3600,
    "validate-contract": 3600,
    "build-features": 3600,
    "check-drift": 1800,
    "plan-training": 1800,
    "tune-hyperparameters": 4 * 3600,
    "train-network-ddp": 5 * 3600,
    "evaluate-champion": 3600,
    "evaluate-on-holdout": 3600,
    "fit-trees": 3600,
    "compress-network": 3600,
    "register-challenger": 1800,
    "gate-challenger": 1800,
    "promote-challenger": 600,
    "publish-summary": 600,
    "plan-backfill": 600,
    "publish-backfill": 600,
    "publish-backtest": 600,
}


def task_timeout(name: str) -> float:
    """The Prefect `timeout_seconds` of the task `name`: the settings' override, else the
    default above (an unknown name gets an hour: every task has a bound)."""
    return float(get_settings().task_timeouts_s.get(name, TASK_TIMEOUTS_S.get(name, 3600)))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call `get_settings.cache_clear()` after changing env)."""
    return Settings()


def configure_runtime_environment(settings: Settings | None = None) -> Settings:
    """Set the environment Prefect, MLflow and Dask read at import, before they are imported.

    Prefect reads its settings when it is first imported, and Dask workers inherit the
    environment of the process that starts them, so this must run first in the CLI.
    """
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.prefect_api_url:
        os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    else:
        os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    # Offline machines: no telemetry and no update checks that fail and log errors.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "nightshift")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    return settings

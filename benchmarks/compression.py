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

from tasks.core.context import RunContext
from tasks.core.results import read_result
from tasks.core.settings import get_settings
from tasks.features.build import FeatureSet
from tasks.release.compress import compress_network
from tasks.release.config import CompressionConfig
from tasks.training.loop import TrainResult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", default="2013-12-31")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--budget", type=float, default=0.002)
    args = parser.parse_args()
    ctx = RunContext.from_settings(get_settings(), date.fromisoformat(args.as_of), "flights")
    try:  # the results the nightly run recorded for its features and its trained network
        features = read_result(ctx, "features", FeatureSet)
        trained = read_result(ctx, "train", TrainResult)
    except FileNotFoundError as error:
        raise SystemExit(f"{error}; e.g. `make run`") from None
    config = CompressionConfig(
        auc_drop_budget=args.budget, latency_threads=args.threads, latency_repeats=args.repeats
    )
    cores = os.cpu_count()
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    with tempfile.TemporaryDirectory(prefix="nightshift-compress-") as out:
        compression = compress_network(ctx.spec, features, trained, out, config, seed=0)
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

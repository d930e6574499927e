"""The in-run baseline, old vs new, side by side on the same features and split.

    .venv/bin/python benchmarks/baseline.py --features <home>/lake/runs/flights/2013-12-30/features \
        <home>/lake/runs/flights/2013-12-31/features --seeds 42 0 7

For each night's features and seed it fits (1) the HistGradientBoosting baseline nightshift
used until issue 14 (300 iterations, sklearn's own random 10 % early-stopping split, one
OpenMP thread) and (2) today's baseline, `tasks/evaluation/baseline.py` (the blend's
LightGBM tree on the whole training window, one thread), both on the training window's
rows only, and prints holdout ROC AUC and fit + predict seconds as a table row.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.evaluation.baseline import fit_baseline
from tasks.features.build import load_preprocessor


def encode_for_hgb(spec, preprocessor, rows):
    """The old baseline's inputs: the network's features, categoricals as the codes."""
    features = spec.feature_frame(rows)
    codes, _ = preprocessor.transform(features)
    encoded = features[preprocessor.numeric].astype("float64").copy()
    for i, column in enumerate(preprocessor.categorical):
        encoded[column] = codes[:, i]
    return encoded


def hgb_proba(spec, preprocessor, train, holdout, seed: int):
    """The HistGradientBoosting baseline as it was (`tasks/evaluation/baseline.py` before)."""
    model = HistGradientBoostingClassifier(
        categorical_features=list(preprocessor.categorical), max_iter=300, random_state=seed
    )
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(encode_for_hgb(spec, preprocessor, train), train["label"].to_numpy())
        return model.predict_proba(encode_for_hgb(spec, preprocessor, holdout))[:, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, nargs="+", help="runs' features/ dirs")
    parser.add_argument("--dataset", default="flights")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 7])
    args = parser.parse_args()
    spec = get_dataset(args.dataset)
    results: dict[str, list[tuple[float, float]]] = {"hgb": [], "lightgbm": []}
    print("| night | seed | HistGradientBoosting AUC | s | LightGBM (today's) AUC | s | Δ |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for features in args.features:
        lake = Lake.of(features)
        preprocessor = load_preprocessor(f"{features}/preprocessor.json")
        train = lake.read_parquet(f"{features}/train.parquet")
        holdout = lake.read_parquet(f"{features}/holdout.parquet")
        y_holdout = holdout["label"].to_numpy().astype(int)
        night = Path(features).parent.name
        for seed in args.seeds:
            started = time.perf_counter()
            hgb_auc = roc_auc_score(y_holdout, hgb_proba(spec, preprocessor, train, holdout, seed))
            hgb_s = time.perf_counter() - started
            started = time.perf_counter()
            baseline = fit_baseline(spec, train, preprocessor, seed)
            lgbm_auc = roc_auc_score(y_holdout, baseline.predict_proba(holdout))
            lgbm_s = time.perf_counter() - started
            results["hgb"].append((hgb_auc, hgb_s))
            results["lightgbm"].append((lgbm_auc, lgbm_s))
            print(
                f"| {night} | {seed} | {hgb_auc:.4f} | {hgb_s:.1f} | {lgbm_auc:.4f} | "
                f"{lgbm_s:.1f} | {lgbm_auc - hgb_auc:+.4f} |",
                flush=True,
            )
    for name, rows in results.items():
        aucs, seconds = [r[0] for r in rows], [r[1] for r in rows]
        print(
            f"{name}: AUC mean {statistics.mean(aucs):.4f} "
            f"(min {min(aucs):.4f}, max {max(aucs):.4f}), mean {statistics.mean(seconds):.1f} s"
        )


if __name__ == "__main__":
    main()

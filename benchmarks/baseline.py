"""The in-run baseline, old vs new, side by side on the same features and split.

    NIGHTSHIFT_HOME=/tmp/bench-home .venv/bin/nightshift land --through 2013-12-31
    NIGHTSHIFT_HOME=/tmp/bench-home .venv/bin/nightshift ingest --as-of 2013-12-31
    NIGHTSHIFT_HOME=/tmp/bench-home .venv/bin/nightshift validate --as-of 2013-12-31
    NIGHTSHIFT_HOME=/tmp/bench-home .venv/bin/nightshift features --as-of 2013-12-31
    .venv/bin/python benchmarks/baseline.py --features /tmp/bench-home/lake/runs/flights/2013-12-31/features

For each seed it fits (1) the HistGradientBoosting baseline nightshift used before
(300 iterations, sklearn's own random 10 % early-stopping split) and (2) the LightGBM
baseline of `tasks/evaluation/baseline.py` (early stop on the last 14 training days, refit
on the whole window), and prints holdout ROC AUC and fit+predict seconds as a table row.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.evaluation.baseline import encode_for_trees, fit_baseline
from tasks.features.build import load_preprocessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="a run's features/ directory")
    parser.add_argument("--dataset", default="flights")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    spec, lake = get_dataset(args.dataset), Lake.of(args.features)
    preprocessor = load_preprocessor(f"{args.features}/preprocessor.json")
    train = lake.read_parquet(f"{args.features}/train.parquet")
    holdout = lake.read_parquet(f"{args.features}/holdout.parquet")
    y_holdout = holdout["label"].to_numpy().astype(int)
    x_train = encode_for_trees(spec, preprocessor, train)
    x_holdout = encode_for_trees(spec, preprocessor, holdout)
    results: dict[str, list[tuple[float, float]]] = {"hgb": [], "lgbm": []}
    print("| seed | HistGradientBoosting AUC | s | LightGBM AUC | s | rounds |")
    print("|---|---:|---:|---:|---:|---:|")
    for seed in args.seeds:
        started = time.perf_counter()
        hgb = HistGradientBoostingClassifier(
            categorical_features=list(preprocessor.categorical), max_iter=300, random_state=seed
        ).fit(x_train, train["label"].to_numpy())
        hgb_auc = roc_auc_score(y_holdout, hgb.predict_proba(x_holdout)[:, 1])
        hgb_s = time.perf_counter() - started
        started = time.perf_counter()
        baseline = fit_baseline(spec, train, preprocessor, seed)
        lgbm_auc = roc_auc_score(y_holdout, baseline.predict_proba(holdout))
        lgbm_s = time.perf_counter() - started
        results["hgb"].append((hgb_auc, hgb_s))
        results["lgbm"].append((lgbm_auc, lgbm_s))
        print(
            f"| {seed} | {hgb_auc:.4f} | {hgb_s:.1f} | {lgbm_auc:.4f} | {lgbm_s:.1f} "
            f"| {baseline.rounds} |"
        )
    for name, rows in results.items():
        aucs, seconds = [r[0] for r in rows], [r[1] for r in rows]
        print(
            f"{name}: AUC mean {statistics.mean(aucs):.4f} "
            f"(min {min(aucs):.4f}, max {max(aucs):.4f}), "
            f"mean {statistics.mean(seconds):.1f} s"
        )


if __name__ == "__main__":
    main()

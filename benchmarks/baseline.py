"""The in-run baseline, old vs new, side by side on the same features and split.

    NIGHTSHIFT_HOME=/tmp/bench-home .venv/bin/nightshift land --through 2013-12-31
    NIGHTSHIFT_HOME=/tmp/bench-home .venv/bin/nightshift ingest --as-of 2013-12-31
    NIGHTSHIFT_HOME=/tmp/bench-home .venv/bin/nightshift validate --as-of 2013-12-31
    NIGHTSHIFT_HOME=/tmp/bench-home .venv/bin/nightshift features --as-of 2013-12-31
    .venv/bin/python benchmarks/baseline.py --features /tmp/bench-home/lake/runs/flights/2013-12-31/features

For each seed it fits (1) nightshift's baseline, `tasks/evaluation/baseline.py`
(HistGradientBoosting, 300 iterations, sklearn's own random 10 % early-stopping split) and
(2) a LightGBM candidate (learning rate 0.1, early stop on the training window's last 14
days, then refit on the whole window with that many rounds), and prints holdout ROC AUC,
fit+predict seconds and LightGBM's rounds as a table row. LightGBM is not a dependency:
`pip install lightgbm` first.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sklearn.metrics import roc_auc_score

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.evaluation.baseline import encode_for_trees, fit_baseline
from tasks.features.build import load_preprocessor

LIGHTGBM = {"learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 50}


def lightgbm_proba(x_train, train, x_holdout, categorical, seed: int):
    """The LightGBM candidate: early stop on the last 14 training days, refit on all."""
    import lightgbm as lgb
    import pandas as pd

    dates = pd.to_datetime(train["date"])
    late = (dates >= dates.max() - pd.Timedelta(days=13)).to_numpy()
    y = train["label"].to_numpy()
    params = {**LIGHTGBM, "random_state": seed, "verbose": -1}
    stopper = lgb.LGBMClassifier(n_estimators=3000, **params).fit(
        x_train[~late], y[~late], eval_X=(x_train[late],), eval_y=(y[late],),
        eval_metric="auc", categorical_feature=categorical,
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )  # fmt: skip
    rounds = int(stopper.best_iteration_)
    model = lgb.LGBMClassifier(n_estimators=rounds, **params)
    model.fit(x_train, y, categorical_feature=categorical)
    return model.predict_proba(x_holdout)[:, 1], rounds


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
        hgb_auc = roc_auc_score(
            y_holdout, fit_baseline(spec, train, preprocessor, seed).predict_proba(holdout)
        )
        hgb_s = time.perf_counter() - started
        started = time.perf_counter()
        proba, rounds = lightgbm_proba(
            x_train, train, x_holdout, list(preprocessor.categorical), seed
        )
        lgbm_auc = roc_auc_score(y_holdout, proba)
        lgbm_s = time.perf_counter() - started
        results["hgb"].append((hgb_auc, hgb_s))
        results["lgbm"].append((lgbm_auc, lgbm_s))
        print(
            f"| {seed} | {hgb_auc:.4f} | {hgb_s:.1f} | {lgbm_auc:.4f} | {lgbm_s:.1f} | {rounds} |"
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

"""The blend candidate: the network plus a gradient-boosted tree, weighted on validation days.

On flights the network trails a default gradient-boosted tree by ~0.01 AUC, yet the two
make different mistakes (smooth embeddings vs axis-aligned splits), so a weighted average
of their logits beats either. Everything here is chosen on the training window's last
`validation_days` days, the same days the network early-stops on, and never on the
holdout: the tree is fitted on the network's fitting days only, the weight is the grid
point with the best validation AUC, and the blend becomes the candidate only when that
AUC is above the network's alone. The served model then carries the tree as a LightGBM
text model (no pickle) inside the sha256 manifest, next to the ONNX network.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from tasks.release.pyfunc import blend_proba, tree_matrix

logger = logging.getLogger("nightshift.evaluate")

# Fixed rounds, no early stopping: early-stopping on the last two weeks of the window kept
# 30 to 177 rounds depending on the seed (BENCHMARKS.md §8); 400 rounds at rate 0.05 was
# the steadiest setting measured there, and the blend weight absorbs any residual misfit.
TREE_ROUNDS = 400
TREE_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    # all rows build the histogram bins: LightGBM's default samples 200,000, and which rows
    # it samples depends on the seed, so the model (and the weight) would too
    "bin_construct_sample_cnt": 10**9,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
# Network weights tried, from 0 (the tree alone) to 1 (the network alone).
WEIGHT_GRID = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))


@dataclass
class BlendChoice:
    """What the validation days decided: the candidate, its weight and its threshold."""

    candidate: str  # "network" or "blend"
    weight: float  # the network's weight in logit space (1.0 = the network alone)
    network_validation_auc: float
    blend_validation_auc: float
    tree_validation_auc: float
    threshold: float  # F1-best cut of the blend's validation scores (used when served)
    tree_path: str  # the served tree: refitted on the whole training window for a blend
    validation_rows: int
    tree_rounds: int = TREE_ROUNDS
    validation_tree_path: str | None = None  # the tree fitted without the validation days
    # the last day that tree was fitted on, and where it came from: fitted tonight on the
    # fitting days, or the champion's, kept from its last full retrain (`ReusedTree`)
    validation_tree_fit_until: str | None = None
    validation_tree_source: str = "fitted tonight on the fitting days"

    @property
    def is_blend(self) -> bool:
        return self.candidate == "blend"

    @property
    def weighing_tree_path(self) -> str:
        """The tree that weighed the blend on the validation days (never saw them)."""
        return self.validation_tree_path or self.tree_path


@dataclass(frozen=True)
class ReusedTree:
    """The champion's weighing tree, staged by a fine-tune night's plan.

    The weight is re-chosen every night, with tonight's network, on tonight's validation
    days; what a fine-tune night reuses is the tree that scores those days, fitted at the
    champion's last full retrain on days before them (`fit_until`), with the same
    preprocessing (a fine-tune keeps the champion's). It never saw tonight's validation or
    holdout rows, as tonight's own would not have: one 400-round fit fewer per night
    (BENCHMARKS.md §37). The served tree is still tonight's, fitted on the whole window.
    """

    path: str
    fit_until: str  # ISO date: its last fitting day
    source: str  # e.g. "champion v3's, fitted on days to 2013-12-16"


def tree_threads() -> int:
    """OpenMP threads of the evaluate stage's trees (the blend's and the baseline).

    One by default: the trees fit beside Dask workers, and OpenMP threads degrade badly
    when the machine is oversubscribed (a 2-core box: LightGBM 20 s alone, 6 min with a
    busy neighbour; the HistGradientBoosting baseline of the time 11 s on one thread, 197 s
    on all under load, BENCHMARKS.md §20). The cores are used by fitting the two trees side
    by side instead (`concurrent_tree_fits`). NIGHTSHIFT_TREE_THREADS=0 uses every core.
    """
    return int(os.environ.get("NIGHTSHIFT_TREE_THREADS", "1")) or (os.cpu_count() or 1)


def fit_tree(codes: np.ndarray, numeric: np.ndarray, labels: np.ndarray, seed: int):
    """A LightGBM booster on the network's inputs (codes as categorical columns)."""
    import lightgbm

    threads = tree_threads()
    data = lightgbm.Dataset(
        tree_matrix(codes, numeric),
        label=np.asarray(labels, dtype=np.float64),
        categorical_feature=list(range(codes.shape[1])),
        free_raw_data=True,
    )
    params = {**TREE_PARAMS, "seed": seed, "num_threads": threads}
    return lightgbm.train(params, data, num_boost_round=TREE_ROUNDS)


def choose_weight(
    labels: np.ndarray, network: np.ndarray, tree: np.ndarray
) -> tuple[float, dict[float, float]]:
    """The grid weight with the best AUC on these (validation) rows; ties go to the network.

    Returns the weight and the AUC at every grid point, for the run's record.
    """
    aucs = {w: float(roc_auc_score(labels, blend_proba(network, tree, w))) for w in WEIGHT_GRID}
    best = max(aucs.values())
    # ties (a flat stretch of the curve) resolve to the largest network weight: the simpler
    # served model when it is as good
    weight = max(w for w, auc in aucs.items() if auc >= best - 1e-12)
    return weight, aucs


def choose_blend(
    fit_codes: np.ndarray,
    fit_numeric: np.ndarray,
    fit_labels: np.ndarray,
    val_codes: np.ndarray,
    val_numeric: np.ndarray,
    val_labels: np.ndarray,
    network_val_proba: np.ndarray,
    tree_path: str,
    seed: int,
    fit_until: str | None = None,
    reuse: ReusedTree | None = None,
) -> BlendChoice:
    """Fit the tree on the fitting days (or take `reuse`'s), weigh it against the network
    on the validation days.

    Only training-window rows come in: the holdout cannot influence the weight, the
    candidate or the threshold. The tree is saved to `tree_path` (LightGBM's text format).
    """
    import lightgbm

    from tasks.training.loop import best_f1_threshold  # torch is loaded by the caller anyway

    if len(np.unique(val_labels)) < 2:
        raise ValueError(
            f"blend: the {len(val_labels)} validation rows hold one class only; "
            "a weight cannot be chosen (widen validation_days)"
        )
    if reuse is None:
        booster = fit_tree(fit_codes, fit_numeric, fit_labels, seed)
        booster.save_model(tree_path)
    else:
        if Path(reuse.path).resolve() != Path(tree_path).resolve():  # not fitted here tonight
            shutil.copyfile(reuse.path, tree_path)
        booster = lightgbm.Booster(model_file=tree_path)
    from tasks.release.pyfunc import tree_proba

    tree_val = tree_proba(booster, val_codes, val_numeric)
    weight, aucs = choose_weight(val_labels, network_val_proba, tree_val)
    network_auc = aucs[1.0]
    blend_auc = aucs[weight]
    candidate = "blend" if blend_auc > network_auc else "network"
    served_val = blend_proba(network_val_proba, tree_val, weight)
    choice = BlendChoice(
        candidate=candidate,
        weight=weight if candidate == "blend" else 1.0,
        network_validation_auc=round(network_auc, 6),
        blend_validation_auc=round(blend_auc, 6),
        tree_validation_auc=round(aucs[0.0], 6),
        threshold=best_f1_threshold(val_labels.astype(int), served_val),
        tree_path=tree_path,
        validation_rows=int(len(val_labels)),
        validation_tree_fit_until=reuse.fit_until if reuse else fit_until,
        validation_tree_source=reuse.source if reuse else BlendChoice.validation_tree_source,
    )
    logger.info(
        "blend: validation AUC network %.4f, tree %.4f (%s), blend %.4f at network weight "
        "%.2f; candidate: %s",
        network_auc,
        aucs[0.0],
        choice.validation_tree_source,
        blend_auc,
        weight,
        candidate,
    )
    return choice


def serve_window_tree(choice: BlendChoice, window_tree) -> BlendChoice:
    """The served tree: the same settings fitted on the whole training window.

    The weight and the threshold stay those chosen with the tree that did not see the
    validation days (as a tuned model is refitted once its settings are chosen); the served
    tree gains the window's most recent two weeks. Measured on the December holdout, seed
    42: blend AUC 0.7172 with the fitting-days tree, 0.7188 refitted (BENCHMARKS.md §12).
    `window_tree` is that fit, made once by `evaluate` for the baseline too (same
    settings, same rows, same seed: a second fit would be the same model).
    """
    path = choice.tree_path.removesuffix(".txt") + "-served.txt"
    window_tree.save_model(path)
    return dataclasses.replace(choice, tree_path=path, validation_tree_path=choice.tree_path)


def concurrent_tree_fits() -> int:
    """How many of the evaluate stage's tree fits run at once: two when two fits of
    `tree_threads()` threads each fit in the cores this process may use, else one.

    The evaluate stage runs after training, with the Dask workers otherwise idle.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    return 2 if 2 * tree_threads() <= cores else 1

"""Evaluate: score the new network, a gradient-boosting baseline and the current champion
on the same holdout rows, so every comparison in the run is like with like.
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from data_contracts import load_contract
from tasks.core.context import RunContext
from tasks.core.lake import Lake
from tasks.core.results import write_result
from tasks.core.settings import task_timeout
from tasks.datasets.spec import DatasetSpec
from tasks.evaluation.baseline import BASELINE_NAME
from tasks.evaluation.blend import (
    BlendChoice,
    ReusedTree,
    choose_blend,
    serve_window_tree,
    tree_threads,
)
from tasks.evaluation.champion import champion_scorer
from tasks.evaluation.diagnostics import (
    calibration_bins,
    expected_calibration_error,
    save_plots,
    slice_metrics,
)
from tasks.evaluation.trees import (
    PendingTrees,
    TreeFits,
    accepted_reuse,
    fit_window_trees,
    usable_validation,
)
from tasks.features.build import FeatureSet, load_preprocessor
from tasks.features.preprocessor import TabularPreprocessor
from tasks.release.pyfunc import blend_proba, load_tree, tree_proba
from tasks.training.incremental import WEIGHING_TREE_FILE
from tasks.training.loop import TrainResult, load_network
from tasks.training.model import TabularNet, predict_proba, torch_threads

if TYPE_CHECKING:
    import lightgbm

logger = logging.getLogger("nightshift.evaluate")


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float
) -> dict[str, float]:
    """Ranking, calibration and thresholded metrics of one scorer on one set of rows."""
    predicted = (proba >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    return {
        "roc_auc": float(roc_auc_score(y_true, proba)),
        "pr_auc": float(average_precision_score(y_true, proba)),
        "log_loss": float(log_loss(y_true, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, proba)),
        "calibration_error": expected_calibration_error(calibration_bins(y_true, proba)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "threshold": float(threshold),
        "true_positives": int(tp),
        "false_positives": int(fp),
        "true_negatives": int(tn),
        "false_negatives": int(fn),
        "rows": int(len(y_true)),
    }


@dataclass
class Evaluation:
    """Metrics of the new model, the baseline and the champion on one holdout.

    `slices` has one row per slice with enough rows: `<scorer>_roc_auc` and `<scorer>_brier`
    for model, baseline, blend and (if any) champion. `calibration` is the model's
    reliability table. `blend` holds the network + tree blend's holdout metrics (reported
    whichever candidate won); `blend_choice` what the validation days decided.
    """

    model: dict[str, float]
    baseline: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    predictions_path: str
    holdout_rows: int
    slices: list[dict] = field(default_factory=list)
    slice_min_rows: int = 0
    calibration: list[dict] = field(default_factory=list)
    plot_paths: list[str] = field(default_factory=list)
    blend: dict[str, float] | None = None
    blend_choice: BlendChoice | None = None

    @property
    def candidate(self) -> str:
        """What the release serves: "network", or "blend" when it won on validation."""
        return self.blend_choice.candidate if self.blend_choice else "network"


def evaluate_models(
    spec: DatasetSpec,
    features: FeatureSet,
    trained: TrainResult,
    out_dir: str,
    seed: int,
    score_champion=None,
    slice_min_rows: int = 300,
    reuse: ReusedTree | None = None,
    prefit: TreeFits | PendingTrees | None = None,
) -> Evaluation:
    """Score model, baseline and (via `score_champion(rows) -> (version, proba)`) champion.

    All three are also measured per slice (those of `slice_min_rows` rows or more) and
    plotted into `out_dir/plots`. `reuse`, `prefit`: see `fit_trees`.
    """
    lake = Lake.of(out_dir)
    preprocessor = load_preprocessor(features.preprocessor_path)
    train = lake.read_parquet(features.train_path)
    holdout = lake.read_parquet(features.holdout_path)
    y_true = holdout["label"].to_numpy().astype(int)

    net = load_network(trained.weights_path, trained.net_config_path)
    codes, numeric = preprocessor.transform(spec.feature_frame(holdout))  # once: net and trees
    model_proba = predict_proba(net, codes, numeric)
    baseline, choice, scored = _trees_and_champion(
        spec,
        train,
        holdout,
        preprocessor,
        net,
        trained,
        out_dir,
        seed,
        score_champion,
        (reuse, prefit),
    )
    base_proba = tree_proba(baseline, codes, numeric)
    # The contract's key identifies each holdout row in the predictions file.
    predictions = holdout[[*load_contract(spec.fact.name).key, "label"]].copy()
    predictions["model"] = model_proba
    predictions["baseline"] = base_proba
    if choice is not None:
        tree = load_tree(choice.tree_path)
        # the blend at the weight the validation days chose (1.0, the network itself, when
        # no blend beat it there); scored on the holdout for the record, never to choose it
        tree_holdout = tree_proba(tree, codes, numeric)
        predictions["blend"] = blend_proba(model_proba, tree_holdout, choice.weight)

    champion_metrics, champion_version = None, None
    if scored is not None:
        champion_version, champion_proba = scored
        predictions["champion"] = champion_proba
        champion_metrics = classification_metrics(y_true, champion_proba, trained.threshold)

    predictions_path = f"{out_dir}/predictions.parquet"
    lake.write_parquet_atomic(predictions_path, predictions)
    scores = {
        name: predictions[name].to_numpy()
        for name in ("model", "baseline", "blend", "champion")
        if name in predictions
    }
    return Evaluation(
        model=classification_metrics(y_true, model_proba, trained.threshold),
        baseline=classification_metrics(y_true, base_proba, trained.threshold),
        champion=champion_metrics,
        champion_version=champion_version,
        predictions_path=predictions_path,
        holdout_rows=len(holdout),
        slices=slice_metrics(y_true, scores, spec.slice_frame(holdout), slice_min_rows),
        slice_min_rows=slice_min_rows,
        calibration=calibration_bins(y_true, model_proba),
        plot_paths=save_plots(y_true, scores, trained.threshold, f"{out_dir}/plots")
        if lake.is_local
        else [],
        blend=classification_metrics(y_true, predictions["blend"].to_numpy(), choice.threshold)
        if choice is not None
        else None,
        blend_choice=choice,
    )


def _trees_and_champion(
    spec: DatasetSpec,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    preprocessor: TabularPreprocessor,
    net: TabularNet,
    trained: TrainResult,
    out_dir: str,
    seed: int,
    score_champion,
    trees: tuple[ReusedTree | None, TreeFits | PendingTrees | None],
) -> tuple[lightgbm.Booster, BlendChoice | None, tuple[str, np.ndarray] | None]:
    """The trees' fits (`fit_trees`) and the champion's holdout scores, side by side: on a
    fine-tune night (one fit) the core the blend's fit would take is otherwise idle."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="champion") as pool:
        scoring = (
            pool.submit(score_champion, holdout[list(spec.input_columns)])
            if score_champion is not None
            else None
        )
        # the network scores the validation days beside the baseline's fit: as many torch
        # threads as one fit has, not every core on top of the fits' own
        with torch_threads(tree_threads()):
            baseline, choice = fit_trees(
                spec, train, preprocessor, net, trained, out_dir, seed, *trees
            )
        # bounded like every wait: by the stage's own timeout
        timeout = task_timeout("evaluate-on-holdout")
        scored = scoring.result(timeout=timeout) if scoring is not None else None
    return baseline, choice, scored


def fit_trees(
    spec: DatasetSpec,
    train: pd.DataFrame,
    preprocessor: TabularPreprocessor,
    net: TabularNet,
    trained: TrainResult,
    out_dir: str,
    seed: int,
    reuse: ReusedTree | None = None,
    prefit: TreeFits | PendingTrees | None = None,
) -> tuple[lightgbm.Booster, BlendChoice | None]:
    """The night's two LightGBM fits (`trees.fit_window_trees`: side by side when the cores
    allow): the baseline (the whole training window) and the blend's tree on the fitting
    days; the blend then serves
    the baseline's very tree (the same settings on the same rows: refitting it would give
    the same model). Returns the baseline's booster and the blend choice.

    Two one-thread fits at once use both cores of a 2-core box without OpenMP's spinning
    threads, which degrade badly beside a busy neighbour (`blend.tree_threads`). With
    `reuse` (a fine-tune night) the blend is weighed with the champion's tree: one fit.
    With `prefit` (the night's flow fits them while the network trains) none is fitted
    here, unless training split off other validation days than they were fitted for; a
    `PendingTrees` is waited for here, after the work that does not need the trees.
    """
    codes, numeric = preprocessor.transform(spec.feature_frame(train))  # once: both fits
    if isinstance(prefit, PendingTrees):
        prefit = prefit.result(timeout=task_timeout("fit-trees"))
    local_dir = out_dir if Lake.of(out_dir).is_local else tempfile.mkdtemp(prefix="nightshift-")
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    if prefit is not None and prefit.validation_days != trained.validation_days:
        logger.warning(
            "evaluate: the trees were fitted for %d validation days, training used %d: "
            "fitting them again",
            prefit.validation_days,
            trained.validation_days,
        )
        prefit = None
    if prefit is None:
        prefit = fit_window_trees(
            train, codes, numeric, trained.validation_days, local_dir, seed, reuse
        )
    baseline = load_tree(prefit.baseline_path)
    choice = blend_on_validation(
        train, codes, numeric, net, trained, local_dir, seed, prefit.weighing
    )
    logger.info("evaluate: %s baseline, %d rounds", BASELINE_NAME, baseline.num_trees())
    if choice is not None and choice.is_blend:
        logger.info("evaluate: the blend won on validation; it serves the window's tree")
        choice = serve_window_tree(choice, baseline)
    return baseline, choice


def blend_on_validation(
    train: pd.DataFrame,
    codes: np.ndarray,
    numeric: np.ndarray,
    net: TabularNet,
    trained: TrainResult,
    local_dir: str,
    seed: int,
    reuse: ReusedTree | None = None,
) -> BlendChoice | None:
    """Fit the blend's tree on the fitting days (or take `reuse`, the champion's, when it
    was fitted before tonight's validation days) and choose network vs blend on the
    validation days only (`codes`, `numeric`: the window's encoded rows).

    None when the window is too small to hold out validation days of both classes (tiny
    test windows): the network is then the candidate, as before blends existed.
    """
    is_validation = usable_validation(train, trained.validation_days)
    if is_validation is None:
        logger.warning("evaluate: no usable validation days for a blend; serving the network")
        return None
    labels = train["label"].to_numpy().astype(int)
    fit, val = ~is_validation, is_validation
    dates = pd.to_datetime(train["date"])
    # tonight's validation days may have moved back (a longer `validation_days`)
    reuse = accepted_reuse(train, is_validation, reuse)
    return choose_blend(
        codes[fit],
        numeric[fit],
        labels[fit],
        codes[val],
        numeric[val],
        labels[val],
        predict_proba(net, codes[val], numeric[val]),
        f"{local_dir}/{WEIGHING_TREE_FILE}",  # the name the release logs it under
        seed,
        fit_until=dates[fit].max().date().isoformat(),
        reuse=reuse,
    )


def evaluate(
    ctx: RunContext,
    features: FeatureSet,
    trained: TrainResult,
    slice_min_rows: int = 300,
    log: logging.Logger | logging.LoggerAdapter = logger,
    reuse: ReusedTree | None = None,
    prefit: TreeFits | PendingTrees | None = None,
) -> Evaluation:
    """The evaluate stage: model vs baseline vs current champion on the same holdout rows.

    `reuse`: on a fine-tune night, the champion's weighing tree (the plan stages it);
    `prefit`: the trees the night fitted while the network trained."""
    evaluation = evaluate_models(
        ctx.spec,
        features,
        trained,
        ctx.run_dir("evaluation"),
        ctx.seed,
        champion_scorer(ctx.tracking_uri, ctx.model_name),
        slice_min_rows=slice_min_rows,
        reuse=reuse,
        prefit=prefit,
    )
    champion = (
        f"champion v{evaluation.champion_version} AUC {evaluation.champion['roc_auc']:.4f}"
        if evaluation.champion
        else "no champion yet"
    )
    if evaluation.blend_choice is not None:
        log.info(
            "evaluate: the blend was weighed with the tree %s",
            evaluation.blend_choice.validation_tree_source,
        )
    log.info(
        "evaluate: %d holdout rows; model AUC %.4f, baseline AUC %.4f, %s",
        evaluation.holdout_rows,
        evaluation.model["roc_auc"],
        evaluation.baseline["roc_auc"],
        champion,
    )
    return write_result(ctx, "evaluate", evaluation)

"""The night's LightGBM fits, made while the network trains.

Both of the evaluate stage's trees need only the training window, never the network: the
baseline (the whole window; also the served blend's tree) and the blend's weighing tree
(the fitting days, without the validation days). Fitted in the evaluate stage they took
the night's critical path after training: ~10 s of one core per fit on a 2-core box, with
the other core idle once the rest of the stage was done (BENCHMARKS.md §38).

Here they are fitted from the plan on, in threads of the flow process that run at the
lowest CPU priority, beside the tuning and the training: they take only the cycles the
Dask ranks leave idle (a DDP rank waiting on an all-reduce, a trial starting), and the
evaluate stage finishes whatever remains. The models are the same ones (same rows, same
settings, same seed; LightGBM's result does not depend on when or at which priority it
runs), saved where the evaluate stage would have saved them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.lake import Lake
from tasks.core.settings import task_timeout
from tasks.datasets.spec import DatasetSpec
from tasks.evaluation.blend import BlendChoice, ReusedTree, concurrent_tree_fits, fit_tree
from tasks.features.build import FeatureSet, load_preprocessor
from tasks.training.incremental import WEIGHING_TREE_FILE
from tasks.training.loop import validation_mask

logger = logging.getLogger("nightshift.evaluate")

BASELINE_TREE_FILE = "baseline_tree.txt"


@dataclass(frozen=True)
class TreeFits:
    """The fitted trees' files, for the evaluate stage.

    `weighing` is None when the window holds no usable validation days (no blend is
    weighed then); `validation_days` is the split they were fitted for: the evaluate stage
    uses them only when training used the same.
    """

    baseline_path: str
    weighing: ReusedTree | None
    validation_days: int


class PendingTrees:
    """The night's trees while a thread of the flow may still be fitting them: the
    evaluate stage scores the network and the champion first and waits only where it
    needs the trees, so the rest of the fit shares the cores with that work instead of
    leaving one idle. `future`: anything with `result(timeout=...)` returning `TreeFits`
    (the flow's Prefect future; a failed fit raises its own error).
    """

    def __init__(self, future: Any) -> None:
        self._future = future

    def result(self, timeout: float) -> TreeFits:
        """The fitted trees (waits up to `timeout` s; raises the fit's error if it failed)."""
        return self._future.result(timeout=timeout)

    def __repr__(self) -> str:
        return f"PendingTrees({self._future!r})"


def lowest_thread_priority() -> None:
    """Nice 19 for the calling thread only (Linux keeps a nice value per thread).

    The thread then runs when a core would otherwise idle, or after the flow's own work.
    It cannot be raised back without privileges: call it only in a thread that ends with
    the low-priority work (a worker of a pool of its own). A no-op where unsupported.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def usable_validation(train: pd.DataFrame, validation_days: int) -> np.ndarray | None:
    """The window's validation-day mask, or None when a blend cannot be weighed on it (all
    rows are validation days, or they hold one class only: tiny test windows)."""
    is_validation = validation_mask(train, validation_days)
    labels = train["label"].to_numpy()
    if is_validation.all() or len(np.unique(labels[is_validation])) < 2:
        return None
    return is_validation


def accepted_reuse(
    train: pd.DataFrame, is_validation: np.ndarray, reuse: ReusedTree | None
) -> ReusedTree | None:
    """`reuse` (the champion's weighing tree) if it was fitted before tonight's first
    validation day; None, with a warning, if it saw them (a longer `validation_days`)."""
    if reuse is None:
        return None
    first_validation_day = pd.to_datetime(train["date"])[is_validation].min().date()
    if date.fromisoformat(reuse.fit_until) < first_validation_day:
        return reuse
    logger.warning(
        "evaluate: the %s tree was fitted on days to %s, not before tonight's validation "
        "days (from %s): fitting tonight's",
        reuse.source,
        reuse.fit_until,
        first_validation_day,
    )
    return None


def _fit_low(*fit) -> object:
    lowest_thread_priority()
    return fit_tree(*fit)


def fit_window_trees(
    train: pd.DataFrame,
    codes: np.ndarray,
    numeric: np.ndarray,
    validation_days: int,
    local_dir: str,
    seed: int,
    reuse: ReusedTree | None = None,
    low_priority: bool = False,
) -> TreeFits:
    """Fit the baseline on the whole window (`codes`, `numeric`: its encoded rows) and,
    unless `reuse` (the champion's) is accepted, the weighing tree on the fitting days,
    side by side when two one-thread fits fit the cores (`blend.concurrent_tree_fits`);
    saved into `local_dir`. `low_priority`: the side thread is lowered too (the caller's
    thread is the caller's business).
    """
    labels = train["label"].to_numpy().astype(int)
    is_validation = usable_validation(train, validation_days)
    weighing = accepted_reuse(train, is_validation, reuse) if is_validation is not None else None
    fit_weighing = is_validation is not None and weighing is None
    window = (codes, numeric, labels, seed)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline-tree") as pool:
        side = concurrent_tree_fits() > 1 and fit_weighing
        baseline_fit = (
            pool.submit(_fit_low if low_priority else fit_tree, *window) if side else None
        )
        if fit_weighing:
            fit = ~is_validation
            tree = fit_tree(codes[fit], numeric[fit], labels[fit], seed)
            tree.save_model(f"{local_dir}/{WEIGHING_TREE_FILE}")
            fit_until = pd.to_datetime(train["date"])[fit].max().date().isoformat()
            weighing = ReusedTree(
                f"{local_dir}/{WEIGHING_TREE_FILE}",
                fit_until,
                BlendChoice.validation_tree_source,
            )
        # bounded like every wait: by the stage's own timeout
        timeout = task_timeout("evaluate-on-holdout")
        baseline = baseline_fit.result(timeout=timeout) if side else fit_tree(*window)
    baseline_path = f"{local_dir}/{BASELINE_TREE_FILE}"
    baseline.save_model(baseline_path)
    return TreeFits(baseline_path, weighing, validation_days)


def fit_night_trees(
    spec: DatasetSpec,
    features: FeatureSet,
    validation_days: int,
    out_dir: str,
    seed: int,
    reuse: ReusedTree | None = None,
) -> TreeFits:
    """`fit_window_trees` on the night's training window, every fit at the lowest priority.

    Call it in a thread of its own: that thread is lowered too, for good.
    """
    lowest_thread_priority()
    preprocessor = load_preprocessor(features.preprocessor_path)
    train = Lake.of(out_dir).read_parquet(features.train_path)
    codes, numeric = preprocessor.transform(spec.feature_frame(train))  # once: both fits
    local_dir = out_dir if Lake.of(out_dir).is_local else tempfile.mkdtemp(prefix="nightshift-")
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    return fit_window_trees(
        train, codes, numeric, validation_days, local_dir, seed, reuse, low_priority=True
    )

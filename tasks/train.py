"""Train: fit the PyTorch tabular network on the training window, on a Dask worker.

The last `validation_days` of the training window are held back for early stopping and
for choosing the decision threshold, so the holdout stays untouched until evaluation.
Tensors stay resident and batches are index slices: no per-sample DataLoader overhead.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd
import torch
from prefect import get_run_logger, task
from pydantic import BaseModel, Field
from sklearn.metrics import roc_auc_score

from tasks.features import TabularPreprocessor, feature_frame
from tasks.lake import Lake
from tasks.model import NetConfig, TabularNet, member_loss, predict_proba

logger = logging.getLogger("nightshift.train")


class TrainConfig(BaseModel):
    """Hyperparameters of the network and its training loop (a form in the Prefect UI)."""

    epochs: int = Field(default=4, ge=1, le=200, description="Passes over the training rows.")
    batch_size: int = Field(default=1024, ge=32, le=65536, description="Rows per step.")
    learning_rate: float = Field(default=2e-3, gt=0, le=1, description="AdamW peak rate.")
    weight_decay: float = Field(default=1e-5, ge=0, le=1, description="AdamW weight decay.")
    hidden: list[int] = Field(default=[256, 128], min_length=1, description="MLP widths.")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout after each layer.")
    members: int = Field(
        default=8,
        ge=1,
        le=32,
        description="Parallel MLP members averaged into one prediction "
        "(1 = a plain MLP); more members, less variance, proportionally more compute.",
    )
    keep: Literal["best_validation", "last"] = Field(
        default="best_validation",
        description="Which epoch's weights to keep: the one with the best validation AUC "
        "(early stopping, blind to the holdout) or the last one (learning rate annealed).",
    )
    validation_days: int = Field(
        default=14,
        ge=1,
        le=60,
        description="Last days of the training window used for "
        "early stopping and threshold choice (never the holdout).",
    )


@dataclass
class TrainResult:
    """References to the trained network and how training went."""

    weights_path: str
    net_config_path: str
    kept_epoch: int
    validation_auc: float
    threshold: float
    epochs_run: int
    train_rows: int
    validation_rows: int
    seconds: float
    samples_per_second: float
    history: list[dict]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a rerun with the same data gives the same model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def best_f1_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability cut that maximises F1 (on validation rows, never the holdout)."""
    order = np.argsort(-proba)
    sorted_true = y_true[order]
    true_pos = np.cumsum(sorted_true)
    predicted_pos = np.arange(1, len(proba) + 1)
    f1 = 2 * true_pos / (predicted_pos + sorted_true.sum())
    best = int(np.argmax(f1))
    return float(proba[order][best])


def train_network(
    train_path: str,
    preprocessor_path: str,
    out_dir: str,
    config: TrainConfig,
    seed: int,
    log: logging.Logger | logging.LoggerAdapter = logger,
) -> TrainResult:
    """Train, early-stop on the validation days, and write weights + shape to `out_dir`."""
    started = time.perf_counter()
    seed_everything(seed)
    lake = Lake.of(train_path)
    with lake.fs.open(preprocessor_path, "r") as handle:
        preprocessor = TabularPreprocessor.from_json(handle.read())
    rows = lake.read_parquet(train_path)
    cutoff = pd.to_datetime(rows["date"]).max() - timedelta(days=config.validation_days - 1)
    is_validation = (pd.to_datetime(rows["date"]) >= cutoff).to_numpy()
    codes, numeric = preprocessor.transform(feature_frame(rows))
    labels = rows["label"].to_numpy(dtype=np.float32)
    fit_codes, fit_numeric = (
        torch.from_numpy(codes[~is_validation]),
        torch.from_numpy(numeric[~is_validation]),
    )
    fit_labels = torch.from_numpy(labels[~is_validation])
    val_codes, val_numeric, val_labels = (
        codes[is_validation],
        numeric[is_validation],
        labels[is_validation],
    )

    net_config = NetConfig(
        cardinalities=preprocessor.cardinalities,
        n_numeric=preprocessor.n_numeric,
        hidden=list(config.hidden),
        dropout=config.dropout,
        members=config.members,
    )
    net = TabularNet(net_config)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = max(1, -(-len(fit_labels) // config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=steps_per_epoch * config.epochs
    )
    generator = torch.Generator().manual_seed(seed)
    kept_auc, kept_epoch, best_state, history = -1.0, 0, None, []
    train_seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        net.train()
        order = torch.randperm(len(fit_labels), generator=generator)
        total_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = member_loss(net(fit_codes[batch], fit_numeric[batch]), fit_labels[batch])
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(batch)
        train_seconds += time.perf_counter() - epoch_start
        val_auc = float(roc_auc_score(val_labels, predict_proba(net, val_codes, val_numeric)))
        history.append({"epoch": epoch, "train_loss": total_loss / len(order), "val_auc": val_auc})
        log.info(
            "train: epoch %d/%d loss %.4f val_auc %.4f (%.1f s)",
            epoch,
            config.epochs,
            total_loss / len(order),
            val_auc,
            time.perf_counter() - epoch_start,
        )
        if val_auc > kept_auc or config.keep == "last":
            kept_auc, kept_epoch = val_auc, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    assert best_state is not None
    net.load_state_dict(best_state)
    threshold = best_f1_threshold(val_labels, predict_proba(net, val_codes, val_numeric))

    weights_path, config_path = f"{out_dir}/weights.pt", f"{out_dir}/net_config.json"
    lake.fs.makedirs(out_dir, exist_ok=True)
    with lake.fs.open(weights_path, "wb") as handle:
        torch.save(best_state, handle)
    lake.write_bytes_atomic(config_path, json.dumps(net_config.to_dict()).encode())
    return TrainResult(
        weights_path=weights_path,
        net_config_path=config_path,
        kept_epoch=kept_epoch,
        validation_auc=round(kept_auc, 5),
        threshold=round(threshold, 5),
        epochs_run=config.epochs,
        train_rows=int(len(fit_labels)),
        validation_rows=int(len(val_labels)),
        seconds=round(time.perf_counter() - started, 2),
        samples_per_second=round(len(fit_labels) * config.epochs / max(train_seconds, 1e-9), 1),
        history=history,
    )


def load_network(weights_path: str, net_config_path: str) -> TabularNet:
    """Rebuild a trained network from its weights and shape files."""
    lake = Lake.of(weights_path)
    config = NetConfig(**lake.read_json(net_config_path))
    net = TabularNet(config)
    with lake.fs.open(weights_path, "rb") as handle:
        net.load_state_dict(torch.load(handle, weights_only=True))
    net.eval()
    return net


@task(name="train-network", retries=1, retry_delay_seconds=5)
def train_model(
    train_path: str, preprocessor_path: str, out_dir: str, config: TrainConfig, seed: int
) -> TrainResult:
    """Prefect task (submitted to a Dask worker): train the network and report progress."""
    log = get_run_logger()
    # Dask's nanny starts workers with OMP_NUM_THREADS=1; training is the only work on
    # the cluster at this point, so let torch use every core this process may run on.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    log.info(
        "train: %d epochs, batch %d, lr %g, hidden %s, on %d torch thread(s)",
        config.epochs,
        config.batch_size,
        config.learning_rate,
        config.hidden,
        torch.get_num_threads(),
    )
    result = train_network(train_path, preprocessor_path, out_dir, config, seed, log)
    log.info(
        "train: kept epoch %d, validation AUC %.4f, %.0f samples/s, %.1f s",
        result.kept_epoch,
        result.validation_auc,
        result.samples_per_second,
        result.seconds,
    )
    return result

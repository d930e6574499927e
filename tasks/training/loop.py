"""Train: the training loop (single process, or one DDP rank: see ddp.py).

The last `validation_days` of the training window are held back for early stopping and
for choosing the decision threshold, so the holdout stays untouched until evaluation.
Tensors stay resident and batches are index slices: no per-sample DataLoader overhead.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from tasks.core.lake import Lake
from tasks.datasets import get_dataset
from tasks.features.build import load_preprocessor
from tasks.features.preprocessor import TabularPreprocessor
from tasks.training.checkpoint import (
    EpochCallback,
    SimulatedFailure,
    checkpoint_fingerprint,
    clear_checkpoints,
    latest_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from tasks.training.config import FitSample, TrainConfig
from tasks.training.model import NetConfig, TabularNet, member_loss, predict_proba

logger = logging.getLogger("nightshift.train")


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
    world_size: int = 1
    resumed_from_epoch: int = 0
    rank_parameter_digests: list[str] | None = None
    attempts: int = 1
    validation_days: int = 14  # the days `validation_auc` and `threshold` were chosen on


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a rerun with the same data gives the same model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (seed, epoch, step, shard), stable everywhere.

    Dropout masks and shuffles are drawn from seeds derived from the *global* position
    (epoch, step, shard), never from a process's running RNG state, so 2 DDP ranks and one
    process simulating both shards draw the same masks and train the same network.
    A splitmix64 chain: a few microseconds, as it runs once per step and shard.
    """
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (int(part) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 29
    return state >> 1


_MASK64 = (1 << 64) - 1


def seed_dropout(device: torch.device, value: int) -> None:
    """Reseed only the generator dropout on `device` draws from (torch.manual_seed costs
    ~0.8 ms: it also visits every accelerator backend)."""
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(value)
    else:
        torch.default_generator.manual_seed(value)


def best_f1_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability cut that maximises F1 (on validation rows, never the holdout)."""
    order = np.argsort(-proba)
    sorted_true = y_true[order]
    true_pos = np.cumsum(sorted_true)
    predicted_pos = np.arange(1, len(proba) + 1)
    f1 = 2 * true_pos / (predicted_pos + sorted_true.sum())
    best = int(np.argmax(f1))
    return float(proba[order][best])


@dataclass
class Shard:
    """One shard of the fitting rows, resident on the training device."""

    shard_id: int
    codes: torch.Tensor
    numeric: torch.Tensor
    labels: torch.Tensor


@dataclass
class TrainingData:
    """The fitting shards this process trains on, and the validation rows (chief only).

    Fitting row i (in file order) belongs to shard i % world_size: every shard spans the
    whole time window. A DDP rank holds its own shard; a single process holds all of them.
    """

    shards: list[Shard]
    world_size: int
    fit_rows: int
    smallest_shard_rows: int
    val_codes: np.ndarray
    val_numeric: np.ndarray
    val_labels: np.ndarray
    cardinalities: list[int]
    n_numeric: int


def validation_mask(rows: pd.DataFrame, validation_days: int) -> np.ndarray:
    """True for the rows of the window's last `validation_days` days.

    The one definition of the validation days: the trainer early-stops on them and the
    blend (tasks/evaluation/blend.py) chooses its weight on the same rows.
    """
    dates = pd.to_datetime(rows["date"])
    cutoff = dates.max() - timedelta(days=validation_days - 1)
    return (dates >= cutoff).to_numpy()


def _sampled(
    sample: FitSample | None,
    rows: pd.DataFrame,
    fitting: np.ndarray,
    world_size: int,
    train_path: str,
) -> np.ndarray:
    """The fitting rows a sample keeps; all of them when it keeps too few to give every rank
    one (a window of a few days: better the whole window than an empty shard)."""
    if sample is None:
        return fitting
    kept = sample.keep(rows["date"], fitting)
    if kept.sum() < world_size:
        logger.warning(
            "%s: the fine-tune's sample (%s) keeps %d row(s) for %d rank(s); "
            "fitting all %d rows of the window",
            train_path, sample.describe(), kept.sum(), world_size, fitting.sum(),
        )  # fmt: skip
        return fitting
    return kept


def load_training_data(
    dataset: str,
    train_path: str,
    preprocessor_path: str,
    validation_days: int,
    world_size: int = 1,
    shard_ids: list[int] | None = None,
    device: str | torch.device = "cpu",
    with_validation: bool = True,
    sample: FitSample | None = None,
) -> TrainingData:
    """Read the training Parquet, split off the validation days, keep the shards asked for.

    `sample` (a fine-tune night) keeps only the fitting rows it names; the validation days
    stay whole, so early stopping and the threshold see the same rows either way.
    """
    lake = Lake.of(train_path)
    preprocessor = load_preprocessor(preprocessor_path)
    rows = lake.read_parquet(train_path)
    is_validation = validation_mask(rows, validation_days)
    if is_validation.all():
        raise ValueError(
            f"{train_path}: all rows fall in the last {validation_days} validation day(s); "
            "lower validation_days or train on more days"
        )
    codes, numeric = preprocessor.transform(get_dataset(dataset).feature_frame(rows))
    labels = rows["label"].to_numpy(dtype=np.float32)
    fitting = ~is_validation
    fit_index = np.flatnonzero(_sampled(sample, rows, fitting, world_size, train_path))
    shards = []
    for shard_id in range(world_size) if shard_ids is None else shard_ids:
        index = fit_index[shard_id::world_size]
        shards.append(
            Shard(
                shard_id=shard_id,
                codes=torch.from_numpy(codes[index]).to(device),
                numeric=torch.from_numpy(numeric[index]).to(device),
                labels=torch.from_numpy(labels[index]).to(device),
            )
        )
    empty = slice(0, 0)
    val = is_validation if with_validation else empty
    return TrainingData(
        shards=shards,
        world_size=world_size,
        fit_rows=len(fit_index),
        smallest_shard_rows=len(fit_index) // world_size,
        val_codes=codes[val],
        val_numeric=numeric[val],
        val_labels=labels[val],
        cardinalities=preprocessor.cardinalities,
        n_numeric=preprocessor.n_numeric,
    )


def net_config_for(data: TrainingData, config: TrainConfig) -> NetConfig:
    """The network shape for this data and these hyperparameters."""
    return net_config_from_parts(data, config)


def net_config_from_parts(
    preprocessed: TrainingData | TabularPreprocessor, config: TrainConfig
) -> NetConfig:
    """The network shape for a preprocessing's table sizes and these hyperparameters."""
    return NetConfig(
        cardinalities=list(preprocessed.cardinalities),
        n_numeric=preprocessed.n_numeric,
        hidden=list(config.hidden),
        dropout=config.dropout,
        members=config.members,
        max_embedding_dim=config.embedding_dim,
        numeric_embedding=config.numeric_embedding,
    )


@dataclass
class FitOutcome:
    """What the loop leaves behind: the network with the kept weights, and how it went."""

    net: TabularNet
    net_config: NetConfig
    kept_state: dict[str, torch.Tensor]
    kept_auc: float
    kept_epoch: int
    history: list[dict]
    train_seconds: float
    samples_trained: int
    resumed_from_epoch: int
    last_parameters_digest: str


def parameters_digest(net: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: DDP ranks must end with the same one."""
    digest = hashlib.sha256()
    for name, value in net.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class _Progress:
    """What the loop carries from epoch to epoch (and what a checkpoint restores)."""

    kept_auc: float = -1.0
    kept_epoch: int = 0
    kept_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    samples: int = 0


def _run_epoch(
    model: torch.nn.Module,
    data: TrainingData,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    seed: int,
    epoch: int,
    local_batch: int,
    steps: int,
    device: torch.device,
) -> tuple[float, int]:
    """One pass over the shards this process holds; returns (mean loss, samples trained)."""
    model.train()
    orders = [
        torch.randperm(
            len(shard.labels),
            generator=torch.Generator().manual_seed(mix_seed(seed, epoch, shard.shard_id)),
        ).to(device)
        for shard in data.shards
    ]
    scale = 1.0 / len(data.shards)
    # summed on the device: reading a CUDA loss every step would wait for the GPU each time
    total_loss, samples = torch.zeros((), device=device), 0
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for shard, order in zip(data.shards, orders, strict=True):
            batch = order[step * local_batch : (step + 1) * local_batch]
            seed_dropout(device, mix_seed(seed, epoch, step, shard.shard_id))
            loss = member_loss(model(shard.codes[batch], shard.numeric[batch]), shard.labels[batch])
            (loss * scale).backward()
            total_loss += loss.detach() * scale
            samples += len(batch)
        optimizer.step()
        scheduler.step()
    return float(total_loss) / steps, samples


def _checkpoint_state(
    fingerprint: dict[str, str],
    epoch: int,
    net: TabularNet,
    optimizer,
    scheduler,
    progress: _Progress,
    world_size: int = 1,
) -> dict:
    """Tensors and plain containers only: checkpoints are read with weights_only=True."""
    return {
        "fingerprint": fingerprint,
        "epoch": epoch,
        # how the schedule was laid out: a resume at another world size re-lays it
        "world_size": world_size,
        "total_steps": scheduler.total_steps,
        "model": {k: v.to("cpu") for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "progress": asdict(progress),
    }


def _restore(state: dict, net: TabularNet, optimizer, scheduler, steps_per_epoch: int) -> _Progress:
    """Load a checkpoint into the network, optimiser, schedule and RNGs.

    The weights and AdamW moments are the same at any world size; only the one-cycle
    schedule's step count depends on it (steps = shard rows // per-rank batch). When a
    retry runs on fewer ranks, the fresh schedule (laid out for this world size) is moved
    to the end of the checkpoint's epoch instead of loading the old one, whose step count
    would overrun or stop short.
    """
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("total_steps", scheduler.total_steps) == scheduler.total_steps:
        scheduler.load_state_dict(state["scheduler"])
    else:
        # the optimiser state carries the learning rate reached at the end of that epoch,
        # the same point of the cycle; the next step() continues from here
        scheduler.last_epoch = state["epoch"] * steps_per_epoch
    set_rng_state(state["rng"])
    return _Progress(**state["progress"])


def _optimiser(net: TabularNet, config: TrainConfig, steps_per_epoch: int):
    """AdamW, the fused kernel, with a one-cycle learning-rate schedule.

    Fused on the CPU too: torch's default there is a loop of small per-tensor ops, each
    split across the intra-op threads; one fused kernel per tensor cost 0.5 ms a step
    against 1.4 ms (CPU time, batch 1,024, 426k parameters; BENCHMARKS §23).
    """
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=steps_per_epoch * config.epochs
    )
    return optimizer, scheduler


def _validate_and_keep(
    net: TabularNet, data: TrainingData, config: TrainConfig, progress: _Progress, epoch: int
) -> float:
    """Validation AUC of this epoch; keep its weights when it is the best so far (or last)."""
    val_auc = float(
        roc_auc_score(data.val_labels, predict_proba(net, data.val_codes, data.val_numeric))
    )
    if val_auc > progress.kept_auc or config.keep == "last":
        progress.kept_auc, progress.kept_epoch = val_auc, epoch
        progress.kept_state = {
            k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()
        }
    return val_auc


def _fresh_start(
    net: TabularNet,
    data: TrainingData,
    config: TrainConfig,
    log: logging.Logger | logging.LoggerAdapter,
    score_start: bool,
) -> _Progress:
    """The progress of a fit that resumes nothing. `score_start` (the chief of a fine-tune):
    a fine-tune must beat where it started, so with `keep="best_validation"` the starting
    (champion's) weights are scored as epoch 0 and kept unless an epoch scores higher on
    tonight's validation days (early stopping includes the start)."""
    progress = _Progress()
    if score_start and config.keep == "best_validation":
        auc = _validate_and_keep(net, data, config, progress, 0)
        log.info("train: the starting weights score val_auc %.4f (epoch 0)", auc)
    return progress


def _epoch_message(entry: dict, epochs: int, seconds: float) -> str:
    return (
        f"train: epoch {entry['epoch']}/{epochs} loss {entry['train_loss']:.4f} "
        f"val_auc {entry['val_auc']:.4f} ({seconds:.1f} s)"
    )


def _resume_message(state: dict, checkpoint_dir: str | None, world_size: int) -> str:
    written_by = state.get("world_size", "?")
    return (
        f"train: resuming after epoch {state['epoch']} from {checkpoint_dir} "
        f"(written by {written_by} rank(s), now {world_size})"
    )


def _new_network(
    net_config: NetConfig, device: torch.device, initial_state: dict | None
) -> TabularNet:
    """A fresh network on `device`, or (a fine-tune night) one holding `initial_state`.

    The champion's weights replace the random initialisation before DDP wraps the network;
    the optimiser and its schedule start fresh, so `config.epochs` is the fine-tune's length.
    """
    net = TabularNet(net_config)
    if initial_state is not None:
        net.load_state_dict(initial_state)  # strict: a shape mismatch names the tensor
    return net.to(device)


def fit_network(
    data: TrainingData,
    config: TrainConfig,
    seed: int,
    *,
    device: str | torch.device = "cpu",
    wrap: Callable[[TabularNet], torch.nn.Module] | None = None,
    is_chief: bool = True,
    checkpoint_dir: str | None = None,
    fingerprint: dict[str, str] | None = None,
    on_epoch: EpochCallback | None = None,
    fail_after_epoch: int | None = None,
    log: logging.Logger | logging.LoggerAdapter = logger,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> FitOutcome:
    """The training loop shared by single-process, DDP and HPO training.

    Each step takes `batch_size / world_size` rows from every shard this process holds; a
    single process holding all shards accumulates their gradients, DDP averages them across
    ranks; both give the same step. Only the chief validates, keeps the best epoch and
    writes checkpoints; `wrap` turns the network into a DistributedDataParallel module.

    Resume rule: the newest checkpoint for `fingerprint` (data, preprocessor, hyperparameters,
    seed; not the world size) is resumed: a retry on fewer ranks re-cuts the shards and re-lays
    the schedule. `initial_state`: a fine-tune's start (`_new_network`), scored as epoch 0.
    """
    seed_everything(seed)
    device = torch.device(device)
    net_config = net_config_for(data, config)
    net = _new_network(net_config, device, initial_state)
    model = wrap(net) if wrap else net
    local_batch = max(1, config.batch_size // data.world_size)
    steps = max(1, data.smallest_shard_rows // local_batch)
    optimizer, scheduler = _optimiser(net, config, steps)
    fingerprint = fingerprint or {}
    resumed = latest_checkpoint(checkpoint_dir, fingerprint, log) if checkpoint_dir else None
    if resumed is not None:
        progress = _restore(resumed, net, optimizer, scheduler, steps)
        log.info(_resume_message(resumed, checkpoint_dir, data.world_size))
    else:
        progress = _fresh_start(net, data, config, log, is_chief and initial_state is not None)
    first_epoch = resumed["epoch"] + 1 if resumed is not None else 1
    for epoch in range(first_epoch, config.epochs + 1):
        epoch_start = time.perf_counter()
        loss, samples = _run_epoch(
            model, data, optimizer, scheduler, seed=seed, epoch=epoch,
            local_batch=local_batch, steps=steps, device=device,
        )  # fmt: skip
        progress.train_seconds += time.perf_counter() - epoch_start
        progress.samples += samples
        entry = {"epoch": epoch, "train_loss": loss}
        if is_chief:
            entry["val_auc"] = _validate_and_keep(net, data, config, progress, epoch)
            log.info(_epoch_message(entry, config.epochs, time.perf_counter() - epoch_start))
        progress.history.append(entry)
        if is_chief and checkpoint_dir:
            state = _checkpoint_state(
                fingerprint, epoch, net, optimizer, scheduler, progress, data.world_size
            )
            write_checkpoint(checkpoint_dir, state)
        if is_chief and on_epoch is not None:
            on_epoch(epoch, entry["val_auc"])
        if fail_after_epoch == epoch and resumed is None:
            raise SimulatedFailure(f"test hook: simulated failure after epoch {epoch}")
    digest = parameters_digest(net)
    if is_chief:
        assert progress.kept_state is not None
        net.load_state_dict(progress.kept_state)
    return FitOutcome(
        net=net,
        net_config=net_config,
        kept_state=progress.kept_state or {},
        kept_auc=progress.kept_auc,
        kept_epoch=progress.kept_epoch,
        history=progress.history,
        train_seconds=progress.train_seconds,
        samples_trained=progress.samples,
        resumed_from_epoch=first_epoch - 1,
        last_parameters_digest=digest,
    )


def write_trained_network(
    outcome: FitOutcome,
    data: TrainingData,
    config: TrainConfig,
    out_dir: str,
    started: float,
    world_size: int = 1,
) -> TrainResult:
    """Choose the threshold on validation rows, write weights + shape, and describe the run."""
    net = outcome.net.to("cpu")
    threshold = best_f1_threshold(
        data.val_labels, predict_proba(net, data.val_codes, data.val_numeric)
    )
    lake = Lake.of(out_dir)
    weights_path, config_path = f"{out_dir}/weights.pt", f"{out_dir}/net_config.json"
    buffer = io.BytesIO()
    torch.save(outcome.kept_state, buffer)
    lake.write_bytes_atomic(weights_path, buffer.getvalue())
    lake.write_bytes_atomic(config_path, json.dumps(outcome.net_config.to_dict()).encode())
    return TrainResult(
        weights_path=weights_path,
        net_config_path=config_path,
        kept_epoch=outcome.kept_epoch,
        validation_auc=round(outcome.kept_auc, 5),
        threshold=round(threshold, 5),
        epochs_run=config.epochs,
        train_rows=int(data.fit_rows),
        validation_rows=int(len(data.val_labels)),
        seconds=round(time.perf_counter() - started, 2),
        samples_per_second=round(
            outcome.samples_trained * world_size / max(outcome.train_seconds, 1e-9), 1
        ),
        history=outcome.history,
        world_size=world_size,
        resumed_from_epoch=outcome.resumed_from_epoch,
        rank_parameter_digests=[outcome.last_parameters_digest],
        validation_days=config.validation_days,
    )


def train_network(
    dataset: str,
    train_path: str,
    preprocessor_path: str,
    out_dir: str,
    config: TrainConfig,
    seed: int,
    log: logging.Logger | logging.LoggerAdapter = logger,
    shards: int = 1,
    checkpoint_dir: str | None = None,
    fail_after_epoch: int | None = None,
    init_weights_path: str | None = None,
    sample: FitSample | None = None,
) -> TrainResult:
    """Train in this process, early-stop on the validation days, write weights + shape.

    `shards` > 1 computes exactly the steps a DDP run with that many ranks takes (each
    global batch is drawn shard by shard), which is how DDP is checked against it.
    `init_weights_path` starts from those weights (a fine-tune) instead of a fresh net;
    `sample`, the fitting rows a fine-tune keeps (see `FitSample`).
    """
    started = time.perf_counter()
    data = load_training_data(
        dataset, train_path, preprocessor_path, config.validation_days, shards, sample=sample
    )
    outcome = fit_network(
        data,
        config,
        seed,
        checkpoint_dir=checkpoint_dir,
        fingerprint=checkpoint_fingerprint(
            config, seed, train_path, preprocessor_path, init_weights_path, sample
        ),
        fail_after_epoch=fail_after_epoch,
        log=log,
        initial_state=load_weights(init_weights_path) if init_weights_path else None,
    )
    result = write_trained_network(outcome, data, config, out_dir, started)
    if checkpoint_dir:  # trained and written: nothing left for a checkpoint to save
        clear_checkpoints(checkpoint_dir)
    return result


def load_weights(weights_path: str) -> dict[str, torch.Tensor]:
    """A state dict from the lake (plain tensors only: nothing is unpickled)."""
    with Lake.of(weights_path).fs.open(weights_path, "rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)


def load_network(weights_path: str, net_config_path: str) -> TabularNet:
    """Rebuild a trained network from its weights and shape files."""
    lake = Lake.of(weights_path)
    config = NetConfig(**lake.read_json(net_config_path))
    net = TabularNet(config)
    net.load_state_dict(load_weights(weights_path))
    net.eval()
    return net

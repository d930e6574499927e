"""Per-epoch checkpoints: written atomically by the chief, resumed by a retry.

A checkpoint is resumed only when its fingerprint matches: the same training data,
hyperparameters, seed and world size.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable

import torch

from tasks.core.lake import Lake
from tasks.training.config import TrainConfig


class SimulatedFailure(RuntimeError):
    """Raised by the `fail_after_epoch` test hook to stand in for a crashed worker."""


EpochCallback = Callable[[int, float], None]


def checkpoint_fingerprint(config: TrainConfig, seed: int, world_size: int, train_path: str) -> str:
    """What a checkpoint must match to be resumed: same data, hyperparameters, seed, shards."""
    payload = json.dumps([config.model_dump(mode="json"), seed, world_size, train_path])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def latest_checkpoint(checkpoint_dir: str, fingerprint: str) -> dict | None:
    """The newest checkpoint in `checkpoint_dir` written for this fingerprint, if any."""
    lake = Lake.of(checkpoint_dir)
    if not lake.exists(checkpoint_dir):
        return None
    names = sorted(
        p for p in lake.fs.ls(checkpoint_dir, detail=False) if p.endswith(".pt") and "/epoch-" in p
    )
    for path in reversed(names):
        with lake.fs.open(path, "rb") as handle:
            state = torch.load(handle, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fingerprint:
            return state
    return None


def write_checkpoint(checkpoint_dir: str, state: dict) -> str:
    """Write `epoch-NNNN.pt` atomically, then drop the older epochs (only the last is read)."""
    lake = Lake.of(checkpoint_dir)
    path = f"{checkpoint_dir}/epoch-{state['epoch']:04d}.pt"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    lake.write_bytes_atomic(path, buffer.getvalue())
    for old in lake.fs.ls(checkpoint_dir, detail=False):
        if "/epoch-" in old and old.endswith(".pt") and not old.endswith(path.rsplit("/", 1)[1]):
            lake.fs.rm(old)
    return path

"""Per-epoch checkpoints: written atomically by the chief, resumed by a retry, tied to data.

A checkpoint exists to survive a crash in the middle of training, nothing more. It is
resumed only when its identity matches the run's: a content hash of the training rows and
of the fitted preprocessor (their bytes, not their paths: a rerun of the same `as_of` after
a data fix writes new rows to the same path), the hyperparameters and the seed. The world
size is deliberately not part of it: under DDP every rank holds the same parameters and
optimizer state, so rank 0's state dict is rank-independent and a retry may resume on
fewer (or more) workers than the run that wrote it.

Checkpoints are cleared once the train stage succeeded, i.e. its weights and its
`result.json` are written: from then on the stage's output, not a checkpoint, is what a
later stage reads, and a leftover checkpoint could only be resumed wrongly (a rerun would
"resume after the last epoch" and train nothing).

Checkpoints hold only tensors and plain containers and are read with
`torch.load(weights_only=True)`: a file in the lake is never a way to run code in a rank.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable

import numpy as np
import torch

from tasks.core.lake import Lake
from tasks.training.config import FitSample, TrainConfig

logger = logging.getLogger("nightshift.checkpoint")


class SimulatedFailure(RuntimeError):
    """Raised by the `fail_after_epoch` test hook to stand in for a crashed worker."""


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds something other than tensors and plain containers."""


EpochCallback = Callable[[int, float], None]


def content_sha256(path: str) -> str:
    """sha256 of a file's bytes, or of every file under a directory (by relative path)."""
    lake = Lake.of(path)
    digest = hashlib.sha256()
    files = (
        sorted(p for p in lake.fs.find(path) if not p.rsplit("/", 1)[-1].startswith("."))
        if lake.fs.isdir(path)
        else [path]
    )
    for name in files:
        digest.update(name[len(path) :].encode())
        with lake.fs.open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_fingerprint(
    config: TrainConfig,
    seed: int,
    train_path: str,
    preprocessor_path: str,
    init_weights_path: str | None = None,
    sample: FitSample | None = None,
) -> dict[str, str]:
    """What a checkpoint must match to be resumed, part by part (so a refusal says why).

    The training rows and the preprocessor by content, the hyperparameters, the seed, and
    on a fine-tune the starting weights by content and the fitting rows it keeps.
    """
    parts = {
        "training data": content_sha256(train_path)[:16],
        "preprocessor": content_sha256(preprocessor_path)[:16],
        "hyperparameters": hashlib.sha256(
            json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()[:16],
        "seed": str(seed),
    }
    if init_weights_path:
        parts["initial weights"] = content_sha256(init_weights_path)[:16]
    if sample is not None:
        parts["fitting rows"] = f"{sample.describe()} (seed {sample.seed})"
    return parts


def _load(path: str) -> dict:
    lake = Lake.of(path)
    with lake.fs.open(path, "rb") as handle:
        try:
            return torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises UnpicklingError for a forbidden global
            raise UnsafeCheckpointError(
                f"checkpoint {path} is not plain tensors and containers, refusing to "
                f"unpickle it (torch.load weights_only=True: {error}); delete it to train "
                "from scratch"
            ) from None


def latest_checkpoint(
    checkpoint_dir: str, fingerprint: dict[str, str], log: logging.Logger | None = None
) -> dict | None:
    """The newest checkpoint in `checkpoint_dir` written for this identity, if any.

    A checkpoint for another identity is not resumed, and the log says which part differs.
    """
    log = log or logger
    lake = Lake.of(checkpoint_dir)
    if not lake.exists(checkpoint_dir):
        return None
    names = sorted(
        p for p in lake.fs.ls(checkpoint_dir, detail=False) if p.endswith(".pt") and "/epoch-" in p
    )
    for path in reversed(names):
        state = _load(path)
        written_for = state.get("fingerprint")
        if written_for == fingerprint:
            return state
        changed = sorted(
            k
            for k in fingerprint
            if not isinstance(written_for, dict) or written_for.get(k) != fingerprint[k]
        )
        log.info(
            "train: not resuming from %s: it was written for other %s; training from scratch",
            path,
            ", ".join(changed) or "settings",
        )
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


def clear_checkpoints(checkpoint_dir: str) -> int:
    """Remove a finished training's checkpoints; the number of files removed.

    Called once the train stage succeeded (weights and result written), see the module doc.
    """
    lake = Lake.of(checkpoint_dir)
    if not lake.exists(checkpoint_dir):
        return 0
    names = [p for p in lake.fs.ls(checkpoint_dir, detail=False) if p.endswith(".pt")]
    lake.fs.rm(checkpoint_dir, recursive=True)
    return len(names)


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and plain containers (weights_only)."""
    import random

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    import random

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])

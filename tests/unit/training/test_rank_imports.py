"""What a DDP rank imports: its warm-up (`ddp.warm_up_ranks`) runs beside the features
stage on a small machine, so every module it loads for nothing costs the night time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tasks.training.ddp import RANK_MODULES

ROOT = Path(__file__).resolve().parents[3]


def test_a_ranks_modules_load_neither_mlflow_nor_optuna():
    # a fresh interpreter, as a Dask worker is before its warm-up
    probe = (
        "import importlib, sys\n"
        f"for module in {RANK_MODULES!r}: importlib.import_module(module)\n"
        "print(','.join(m for m in ('mlflow', 'optuna', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    # torch is what the warm-up is for (the probe's proof that it imported the rank's code)
    assert done.stdout.strip() == "torch", done.stdout + done.stderr

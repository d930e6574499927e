"""The release parameters: compression budget, promotion margins and serving budgets.

Pydantic models the Prefect UI shows as forms; kept apart from the release code so the
CLI and the flow's parameter schema load without torch or onnxruntime.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class CompressionConfig(BaseModel):
    """What compression may try and how much quality it may cost (a form in the Prefect UI)."""

    auc_drop_budget: float = Field(
        default=0.002, ge=0, le=0.1, description="Largest holdout AUC drop vs fp32 to accept."
    )
    prune_sparsity: float = Field(
        default=0.6, ge=0, lt=1, description="Fraction of each layer's weights zeroed."
    )
    prune_finetune_epochs: int = Field(
        default=1, ge=0, le=10, description="Fine-tune epochs after pruning (mask kept)."
    )
    low_rank_fraction: float = Field(
        default=0.25, gt=0, le=1, description="SVD rank as a fraction of min(in, out)."
    )
    # Distillation: a one-member student learns the fp32 ensemble's probabilities over the
    # training window. On the full year a [64, 32] student kept the holdout AUC within
    # 0.0003 of the 8-member teacher at a fifteenth of its weights (BENCHMARKS.md §15).
    distill_epochs: int = Field(
        default=4, ge=0, le=50, description="Student training epochs (0 = no distilled variant)."
    )
    # A fine-tune night's student may start from the champion's (same shape: the teacher
    # is the champion's network fine-tuned) and train fewer epochs. Off by default: on the
    # year's flights a warm student after 2 epochs stayed within the AUC budget but served
    # 0.7196 against 0.7200-0.7210 from scratch (3 seeds; BENCHMARKS.md, the one-new-day
    # night, second pass): one fine-tune epoch moves the teacher more than a warm start saves.
    distill_fine_tune_epochs: int = Field(
        default=0,
        ge=0,
        le=50,
        description="Student epochs on a fine-tune night, from the champion's student "
        "(0 = train it from scratch for distill_epochs).",
    )
    distill_hidden: list[int] = Field(
        default=[64, 32], min_length=1, max_length=4, description="Student's hidden widths."
    )
    distill_learning_rate: float = Field(
        default=2e-3, gt=0, le=0.1, description="Student's peak learning rate (one-cycle)."
    )
    latency_threads: int = Field(
        default=1, ge=1, le=64, description="onnxruntime intra-op threads when timing."
    )
    # The variants that train (pruning's fine-tune, the student) and the teacher's soft
    # labels run in the flow process with this many torch threads; the network is the same
    # whatever the count (tested). One by default, for the reason of NIGHTSHIFT_TREE_THREADS:
    # torch's intra-op threads wait for each other at every op, so beside busy neighbours
    # two threads collapse. On the 2-core box the full night's student took 116 s on two
    # threads at load 6-9 and 13.9 s on one at load 4-6; beside one busy neighbour (load
    # ~2) one thread cost the new day's compress stage 12.4 s against 9.7-9.9 s on two
    # (BENCHMARKS.md, the one-new-day night, third pass). 0 = every core.
    train_threads: int = Field(
        default=1,
        ge=0,
        le=256,
        description="torch threads of compression's training and soft labels "
        "(0 = torch's default: every core).",
    )
    latency_repeats: int = Field(default=200, ge=5, le=10000, description="Batch-1 repeats.")


class ReleaseConfig(BaseModel):
    """Margins and budgets of the release stage (a form in the Prefect UI)."""

    auc_margin: float = Field(
        default=0.0, ge=0, le=0.1, description="Challenger AUC may trail the champion by this."
    )
    # The gate's no-free-pass checks (they hold with or without a champion). Defaults from
    # the full-year runs (December holdout): flights' network 0.7034 vs its baseline 0.7134
    # (-0.010), hotels' 0.6728 vs 0.6527 (+0.020). A margin of 0.02 keeps the real network
    # promotable with room for the compression budget (0.002) and night-to-night noise,
    # while a model that learned nothing (AUC ~0.5) misses the baseline by ~0.2. The floor
    # 0.55 is well below either real model and well above chance.
    baseline_margin: float = Field(
        default=0.02,
        ge=0,
        le=0.5,
        description="Served AUC may trail the in-run baseline's holdout AUC by this.",
    )
    min_auc: float = Field(
        default=0.55, ge=0, le=1, description="Absolute floor of the served holdout AUC."
    )
    slice_margin: float = Field(
        default=0.02, ge=0, le=0.5, description="Largest AUC drop allowed in any slice."
    )
    slice_min_rows: int = Field(
        default=300, ge=10, description="Slices with fewer holdout rows are not judged."
    )
    max_size_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1, description="Largest served network artifact (bytes)."
    )
    max_latency_ms_batch1: float = Field(
        default=2.0, gt=0, description="Largest batch-1 CPU latency of the served network (ms)."
    )
    compression: CompressionConfig = Field(default=CompressionConfig())

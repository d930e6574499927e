"""The training and search parameters: pydantic models the Prefect UI shows as forms.

Kept apart from the training code so the CLI and the flow's parameter schema load without
importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import numpy
    import pandas


class TrainConfig(BaseModel):
    """Hyperparameters of the network and its training loop (a form in the Prefect UI)."""

    epochs: int = Field(default=4, ge=1, le=200, description="Passes over the training rows.")
    batch_size: int = Field(default=1024, ge=32, le=65536, description="Rows per step.")
    learning_rate: float = Field(default=2e-3, gt=0, le=1, description="AdamW peak rate.")
    weight_decay: float = Field(default=1e-5, ge=0, le=1, description="AdamW weight decay.")
    hidden: list[int] = Field(default=[256, 128], min_length=1, description="MLP widths.")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout after each layer.")
    embedding_dim: int = Field(
        default=16, ge=2, le=64, description="Largest embedding size of a categorical column."
    )
    members: int = Field(
        default=8,
        ge=1,
        le=32,
        description="Parallel MLP members averaged into one prediction "
        "(1 = a plain MLP); more members, less variance, proportionally more compute.",
    )
    numeric_embedding: Literal["none", "periodic"] = Field(
        default="none",
        description="How numeric columns enter the network: as they are, or through "
        "periodic embeddings (sin/cos at trained frequencies; better AUC, slower epochs).",
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


class TuneConfig(BaseModel):
    """Budget of the hyperparameter search (a form in the Prefect UI)."""

    enabled: bool = Field(default=True, description="Search before training (else use `train`).")
    n_trials: int = Field(default=6, ge=1, le=1000, description="Trials added by this run.")
    warm_trials: int | None = Field(
        default=3,
        ge=1,
        le=1000,
        description="Trials on a warm night (the study holds earlier nights' trials), the "
        "re-scored champion and earlier-best configs included; empty: always n_trials.",
    )
    timeout_s: float = Field(
        default=180, gt=0, le=86400, description="Stop starting new trials after this many s."
    )
    epochs: int = Field(
        default=3, ge=1, le=50, description="Epochs per trial (the pruner's full budget)."
    )
    members: int = Field(
        default=2, ge=1, le=32, description="Ensemble members per trial (cheaper than final)."
    )
    pruning: bool = Field(
        default=True, description="Successive-halving pruning on per-epoch validation AUC."
    )


@dataclass(frozen=True)
class FitSample:
    """Which fitting rows a fine-tune night trains on: every row the champion never fitted,
    and a seeded `replay_fraction` of the rest.

    Why: a fine-tune starts from weights that already fitted the older rows; one epoch over
    the whole window spends most of the night's training re-showing them. Rows dated after
    `new_after` (the champion's last fitting day) are all kept; the older ones are replayed
    at `replay_fraction` so the network does not drift towards the newest days alone. The
    draw is one uniform number per row of the file from `seed`, so every rank and a
    single-process run (any world size) keep the same rows.
    """

    new_after: str  # ISO date: the champion's last fitting day
    replay_fraction: float
    seed: int

    def keep(self, dates: pandas.Series, fitting: numpy.ndarray) -> numpy.ndarray:
        """The kept rows as a mask over the file's rows (`fitting`: not validation days)."""
        import numpy as np  # at call time: this module loads without the numeric stack
        import pandas as pd

        new = (pd.to_datetime(dates) > pd.Timestamp(self.new_after)).to_numpy()
        draw = np.random.default_rng(self.seed).random(len(fitting))
        return fitting & (new | (draw < self.replay_fraction))

    def describe(self) -> str:
        return f"rows after {self.new_after}, and {self.replay_fraction:.0%} of the older ones"

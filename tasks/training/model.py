"""The PyTorch tabular network: embeddings for categoricals, then k parallel MLP members.

Flight delays are noisy and weather readings nearly identify single hours, so one MLP
memorises days and its holdout AUC varies by ~0.005 from seed to seed. Averaging k
members (shared embeddings, independent MLPs, one batched einsum per layer, as in TabM)
removes most of that variance at k times the MLP's arithmetic and one set of weights.

Numeric columns may enter through periodic embeddings (Gorishniy et al., NeurIPS 2022,
"PLR"): each standardised value x becomes relu(W_j [sin(2π c_j x), cos(2π c_j x)] + b_j)
with trained frequencies c_j per column. An MLP on raw numerics is biased towards smooth
functions; the embedding lets it fit the sharp, periodic shapes of hours and weather.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class NetConfig:
    """Everything needed to rebuild the network's shape (stored next to its weights)."""

    cardinalities: list[int]
    n_numeric: int
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.1
    members: int = 4
    max_embedding_dim: int = 16
    # "none" (numerics enter as they are) or "periodic"; the default keeps the networks
    # saved before the option existed loading as they were trained
    numeric_embedding: str = "none"
    # 16 frequencies into 8 units per column (8 into 4 did worse in a first full-year try)
    periodic_frequencies: int = 16
    periodic_dim: int = 8

    def embedding_dims(self) -> list[int]:
        return [min(self.max_embedding_dim, (c + 1) // 2 + 1) for c in self.cardinalities]

    def numeric_width(self) -> int:
        """Width the numeric columns take in the MLP's input."""
        if self.numeric_embedding == "periodic":
            return self.n_numeric * self.periodic_dim
        if self.numeric_embedding != "none":
            raise ValueError(
                f"numeric_embedding {self.numeric_embedding!r}: expected 'none' or 'periodic'"
            )
        return self.n_numeric

    def to_dict(self) -> dict:
        return asdict(self)


class MemberLinear(nn.Module):
    """k independent linear layers applied at once: [n, k, in] -> [n, k, out]."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(
            torch.empty(members, in_features, out_features).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(members, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nki,kio->nko", x, self.weight) + self.bias


class PeriodicEmbedding(nn.Module):
    """Per numeric column: sin/cos at k trained frequencies, then a d-wide linear + ReLU.

    [n, columns] -> [n, columns * d]. Frequencies start from N(0, sigma) on standardised
    inputs (sigma 0.1: smooth at first, sharper only where the data asks for it).
    """

    def __init__(self, columns: int, frequencies: int, dim: int, sigma: float = 0.1) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(columns, frequencies) * sigma)
        bound = 1 / math.sqrt(2 * frequencies)
        self.weight = nn.Parameter(
            torch.empty(columns, 2 * frequencies, dim).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(columns, dim).uniform_(-bound, bound))

    def forward(self, numeric: torch.Tensor) -> torch.Tensor:
        # [n, c] x [c, k] -> [n, c, k]: each column at each of its own frequencies
        angles = torch.einsum("nc,ck->nck", numeric, self.frequencies) * (2 * math.pi)
        periodic = torch.cat([torch.sin(angles), torch.cos(angles)], dim=2)  # [n, c, 2k]
        out = torch.einsum("nck,ckd->ncd", periodic, self.weight) + self.bias
        return torch.relu(out).flatten(1)


class TabularNet(nn.Module):
    """Shared embeddings + k MLP members; returns one logit per row and member [n, k]."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, dim)
            for card, dim in zip(config.cardinalities, config.embedding_dims(), strict=True)
        )
        self.numeric_embedding = (
            PeriodicEmbedding(config.n_numeric, config.periodic_frequencies, config.periodic_dim)
            if config.numeric_embedding == "periodic"
            else None
        )
        width = sum(config.embedding_dims()) + config.numeric_width()
        layers: list[nn.Module] = []
        for hidden in config.hidden:
            layers += [
                MemberLinear(config.members, width, hidden),
                nn.ReLU(),
                nn.Dropout(config.dropout),
            ]
            width = hidden
        layers.append(MemberLinear(config.members, width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        embedded = [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
        if self.numeric_embedding is not None:
            numeric = self.numeric_embedding(numeric)
        inputs = torch.cat([*embedded, numeric], dim=1)
        members = inputs.unsqueeze(1).expand(-1, self.config.members, -1)
        return self.mlp(members).squeeze(2)


def member_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE over members: each member is trained as an independent model."""
    return nn.functional.binary_cross_entropy_with_logits(
        logits, labels.unsqueeze(1).expand_as(logits)
    )


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to `threads` (0: torch's default, every core) inside the
    block, restored after it (the setting is the process's, not the thread's)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def predict_proba(
    net: TabularNet, codes: np.ndarray, numeric: np.ndarray, batch_size: int = 65536
) -> np.ndarray:
    """Positive-class probabilities (members' mean), in row order, in eval mode.

    Inputs are moved to the network's own device and the answer back to the host, so the
    same call validates a CUDA rank and scores on a CPU.
    """
    net.eval()
    device = next(net.parameters()).device
    out = np.empty(len(codes), dtype=np.float64)
    for start in range(0, len(codes), batch_size):
        stop = start + batch_size
        logits = net(
            torch.from_numpy(codes[start:stop]).to(device),
            torch.from_numpy(numeric[start:stop]).to(device),
        )
        out[start:stop] = torch.sigmoid(logits).mean(dim=1).double().cpu().numpy()
    return out

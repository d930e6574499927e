"""The PyTorch tabular network: embeddings for categoricals, then k parallel MLP members.

Flight delays are noisy and weather readings nearly identify single hours, so one MLP
memorises days and its holdout AUC varies by ~0.005 from seed to seed. Averaging k
members (shared embeddings, independent MLPs, one batched einsum per layer, as in TabM)
removes most of that variance at k times the MLP's arithmetic and one set of weights.
"""

from __future__ import annotations

import math
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

    def embedding_dims(self) -> list[int]:
        return [min(self.max_embedding_dim, (c + 1) // 2 + 1) for c in self.cardinalities]

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


class TabularNet(nn.Module):
    """Shared embeddings + k MLP members; returns one logit per row and member [n, k]."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, dim)
            for card, dim in zip(config.cardinalities, config.embedding_dims(), strict=True)
        )
        width = sum(config.embedding_dims()) + config.n_numeric
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
        inputs = torch.cat([*embedded, numeric], dim=1)
        members = inputs.unsqueeze(1).expand(-1, self.config.members, -1)
        return self.mlp(members).squeeze(2)


def member_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE over members: each member is trained as an independent model."""
    return nn.functional.binary_cross_entropy_with_logits(
        logits, labels.unsqueeze(1).expand_as(logits)
    )


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

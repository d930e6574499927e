"""Periodic numeric embeddings: they fit what a plain MLP on raw numerics misses, export
to ONNX as the same function, and networks saved without them still load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tasks.release.compress import ExportNet, export_onnx
from tasks.release.pyfunc import onnx_proba, session
from tasks.training.model import NetConfig, TabularNet, member_loss, predict_proba


def _periodic_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(y) follows sin(6x) of one standardised column: many sharp turns over its range."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 2)).astype(np.float32)
    p = 1 / (1 + np.exp(-4 * np.sin(6 * numeric[:, 0])))
    codes = rng.integers(0, 3, size=(n, 1)).astype(np.int64)
    return codes, numeric, (rng.random(n) < p).astype(np.float32)


def _fit(config: NetConfig, steps: int = 300) -> tuple[TabularNet, float]:
    torch.manual_seed(0)
    net = TabularNet(config)
    codes, numeric, labels = _periodic_rows(4000, seed=1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    c, x, y = torch.from_numpy(codes), torch.from_numpy(numeric), torch.from_numpy(labels)
    for _ in range(steps):
        batch = torch.randint(0, len(y), (256,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        member_loss(net(c[batch], x[batch]), y[batch]).backward()
        optimizer.step()
    codes, numeric, labels = _periodic_rows(4000, seed=2)
    return net, roc_auc_score(labels, predict_proba(net, codes, numeric))


def _config(embedding: str) -> NetConfig:
    return NetConfig(
        cardinalities=[3], n_numeric=2, hidden=[32], dropout=0.0, members=1,
        numeric_embedding=embedding, periodic_frequencies=8, periodic_dim=4,
    )  # fmt: skip


def test_periodic_embeddings_fit_a_sharp_signal_that_a_plain_mlp_misses():
    _, plain = _fit(_config("none"))
    _, periodic = _fit(_config("periodic"))
    # the best possible AUC here is ~0.85; a plain 32-unit MLP smooths the turns away
    assert periodic > 0.8, periodic
    assert periodic > plain + 0.05, (plain, periodic)


def test_the_export_graph_and_onnx_compute_the_periodic_network(tmp_path):
    net, _ = _fit(_config("periodic"), steps=50)
    codes, numeric, _ = _periodic_rows(500, seed=3)
    expected = predict_proba(net, codes, numeric)
    with torch.no_grad():
        exported = ExportNet(net)(torch.from_numpy(codes), torch.from_numpy(numeric)).numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-6)
    path = export_onnx(ExportNet(net), (codes[:1], numeric[:1]), str(tmp_path / "p.onnx"))
    np.testing.assert_allclose(onnx_proba(session(path), codes, numeric), expected, atol=1e-5)


def test_a_network_saved_before_the_option_loads_as_it_was_trained():
    legacy = {"cardinalities": [3], "n_numeric": 2, "hidden": [8], "dropout": 0.1}
    config = NetConfig(**legacy)
    assert config.numeric_embedding == "none" and config.numeric_width() == 2
    assert TabularNet(config).numeric_embedding is None


def test_an_unknown_numeric_embedding_is_refused_by_name():
    with pytest.raises(ValueError, match="numeric_embedding 'fourier'"):
        TabularNet(NetConfig(cardinalities=[3], n_numeric=2, numeric_embedding="fourier"))


def test_the_gpu_search_space_tries_periodic_embeddings_and_the_cpu_space_keeps_its_base():
    from tasks.training.config import TrainConfig
    from tasks.training.tune import best_train_config

    params = {
        "width": 128, "depth": 2, "learning_rate": 1e-3, "embedding_dim": 8, "dropout": 0.1,
        "weight_decay": 1e-5, "batch_size": 8192, "numeric_embedding": "periodic",
    }  # fmt: skip
    assert best_train_config(params, TrainConfig(), "gpu").numeric_embedding == "periodic"
    cpu = {**params, "batch_size": 1024}
    del cpu["numeric_embedding"]
    base = TrainConfig(numeric_embedding="periodic")
    assert best_train_config(cpu, base, "cpu").numeric_embedding == "periodic"
    assert best_train_config(cpu, TrainConfig(), "cpu").numeric_embedding == "none"
    with pytest.raises(ValueError):  # the gpu space needs its choice recorded
        best_train_config(cpu | {"batch_size": 8192}, TrainConfig(), "gpu")

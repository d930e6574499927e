"""The ONNX export: the fast TorchScript exporter and torch.export's give the same graph."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tasks.release.compress import (
    ExportNet,
    _export_dynamo,
    export_onnx,
    quantize_int8,
    strip_debug_info,
)
from tasks.release.pyfunc import onnx_proba, session
from tasks.training.model import NetConfig, TabularNet, predict_proba


def _net(numeric_embedding: str) -> tuple[TabularNet, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    config = NetConfig(
        cardinalities=[5, 11],
        n_numeric=3,
        hidden=[16, 8],
        members=3,
        numeric_embedding=numeric_embedding,
    )
    net = TabularNet(config).eval()
    rng = np.random.default_rng(1)
    codes = np.stack([rng.integers(0, 5, 400), rng.integers(0, 11, 400)], axis=1)
    numeric = rng.normal(size=(400, 3)).astype(np.float32)
    return net, codes.astype(np.int64), numeric


def _ops(path: str) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


@pytest.mark.parametrize("numeric_embedding", ["none", "periodic"])
def test_both_exporters_give_the_same_nodes_and_outputs(tmp_path, numeric_embedding):
    net, codes, numeric = _net(numeric_embedding)
    one = (codes[:1], numeric[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the notice is not passed on
        fast = export_onnx(ExportNet(net), one, str(tmp_path / "fast.onnx"))
    both = tuple(torch.from_numpy(np.concatenate([a, a])) for a in one)
    _export_dynamo(ExportNet(net).eval(), both, str(tmp_path / "dynamo.onnx"))
    slow = strip_debug_info(str(tmp_path / "dynamo.onnx"))

    # the same compute nodes: the layout ops may differ (TorchScript writes split sizes as
    # Constant nodes and the periodic embeddings' flattening as Flatten, not Reshape)
    fast_ops, slow_ops = _ops(fast), _ops(slow)
    for op in ("MatMul", "Add", "Gather", "Einsum", "Relu", "Sigmoid", "Sin", "Cos"):
        assert fast_ops[op] == slow_ops[op], (op, fast_ops, slow_ops)
    assert fast_ops["MatMul"] >= 4 and "Gemm" not in fast_ops
    expected = predict_proba(net, codes, numeric)
    for path in (fast, slow):  # every batch size, not the traced two rows only
        np.testing.assert_allclose(onnx_proba(session(path), codes, numeric), expected, atol=1e-5)
    # and both quantise to the same integer kernels
    fast8 = _ops(quantize_int8(fast, str(tmp_path / "fast8.onnx")))
    slow8 = _ops(quantize_int8(slow, str(tmp_path / "slow8.onnx")))
    assert fast8["MatMulInteger"] == slow8["MatMulInteger"] == fast_ops["MatMul"]


class _WithLinear(nn.Module):
    """A layer the TorchScript exporter writes as Gemm (ExportNet has none)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 2)

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(numeric)).mean(dim=1)


def test_a_graph_the_fast_exporter_writes_with_gemm_is_exported_by_torch_export(tmp_path, caplog):
    one = (np.zeros((1, 1), dtype=np.int64), np.ones((1, 3), dtype=np.float32))
    with caplog.at_level("INFO", logger="nightshift.compress"):
        path = export_onnx(_WithLinear(), one, str(tmp_path / "linear.onnx"))
    assert "Gemm nodes" in caplog.text and "exporting with torch.export" in caplog.text
    rows = np.ones((4, 3), dtype=np.float32)
    with torch.no_grad():
        expected = _WithLinear()(torch.zeros(4, 1), torch.from_numpy(rows)).numpy()
    got = onnx_proba(session(path), np.zeros((4, 1), dtype=np.int64), rows)
    np.testing.assert_allclose(got, expected, atol=1e-6)

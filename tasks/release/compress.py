"""Compress: smaller and faster forms of the trained network, kept only within an AUC budget.

Every variant is served by onnxruntime and measured the same way: artifact size, batch-1
and batch-1024 CPU latency (median of repeats, threads fixed), holdout ROC AUC. The
smallest variant whose AUC drop against the fp32 network stays within the budget is kept;
its ONNX file becomes part of the registered model.

The four classic methods are all variants: int8 quantisation, magnitude pruning (then
quantised), low-rank factorisation (fp32 and quantised) and distillation. The distilled
student is a one-member network with narrow layers that learns the fp32 ensemble's
probabilities (soft labels) over the training window. Its teacher is the network, not the
served blend: the student takes the network's place, so when the blend is served the tree
is added once, by the blend, and not a second time through the student's targets.

Why a separate export graph: `MemberLinear` is one `torch.einsum`, which exports as an
ONNX `Einsum` node that onnxruntime's quantizer leaves in fp32. The export graph computes
the same function with plain matrix products: the first layer's members all read the same
input, so they fuse into one `[in, k*out]` MatMul; deeper layers are one MatMul per member.
Every weight is then a 2-D constant MatMul operand, which `quantize_dynamic` turns into
integer ops (`DynamicQuantizeLinear` + `MatMulInteger`).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from tasks.core.allocator import steady_heap
from tasks.core.context import RunContext
from tasks.core.lake import Lake
from tasks.core.results import write_result
from tasks.datasets.spec import DatasetSpec
from tasks.evaluation.blend import BlendChoice
from tasks.features.build import FeatureSet, load_preprocessor
from tasks.release.config import CompressionConfig
from tasks.release.pyfunc import (
    INPUT_NAMES,
    OUTPUT_NAME,
    blend_proba,
    load_tree,
    onnx_proba,
    session,
    sha256_file,
    tree_proba,
)
from tasks.training.loop import TrainResult, load_network, load_weights, seed_everything
from tasks.training.model import (
    MemberLinear,
    NetConfig,
    TabularNet,
    member_loss,
    predict_proba,
    torch_threads,
)

logger = logging.getLogger("nightshift.compress")

ONNX_OPSET = 18


# ----------------------------------------------------------------------------- export graph


class ExportNet(nn.Module):
    """The trained network re-expressed with 2-D matmuls; returns the members' mean probability.

    Same function as `TabularNet` + `predict_proba` (checked by a test to 1e-6), but every
    layer is a plain matmul, so ONNX gets MatMul nodes that quantize.
    """

    def __init__(self, net: TabularNet, ranks: list[int] | None = None) -> None:
        super().__init__()
        self.members = net.config.members
        self.embeddings = net.embeddings
        # periodic embeddings stay one fp32 Einsum: a few thousand weights, and the
        # quantizer leaves Einsum alone (module docstring)
        self.numeric_embedding = net.numeric_embedding
        layers = [m for m in net.mlp if isinstance(m, MemberLinear)]
        first = layers[0]
        k, width, out = first.weight.shape
        # [k, in, out] -> [in, k*out]: column block m is member m's layer
        self.first = MatMulLinear(
            first.weight.detach().permute(1, 0, 2).reshape(width, k * out),
            first.bias.detach().reshape(k * out),
        )
        self.first_out = out
        self.rest = nn.ModuleList()
        for index, layer in enumerate(layers[1:], start=1):
            rank = ranks[index] if ranks else 0
            self.rest.append(
                nn.ModuleList(
                    _member_linear(layer.weight[m], layer.bias[m], rank) for m in range(k)
                )
            )

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        embedded = [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
        if self.numeric_embedding is not None:
            numeric = self.numeric_embedding(numeric)
        hidden = torch.relu(self.first(torch.cat([*embedded, numeric], dim=1)))
        chunks = torch.split(hidden, self.first_out, dim=1)
        for depth, member_layers in enumerate(self.rest):
            last = depth == len(self.rest) - 1
            chunks = [
                layer(chunk) if last else torch.relu(layer(chunk))
                for layer, chunk in zip(member_layers, chunks, strict=True)
            ]
        logits = torch.cat(chunks, dim=1)  # [n, k]
        return torch.sigmoid(logits).mean(dim=1)


class MatMulLinear(nn.Module):
    """y = x @ W (+ b) written as a plain matmul: exports as ONNX MatMul (+ Add), which the
    dynamic quantizer handles; nn.Linear may export as Gemm, which it leaves in fp32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().contiguous())  # [in, out]
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(x, self.weight)
        return out if self.bias is None else out + self.bias


def _member_linear(weight: torch.Tensor, bias: torch.Tensor, rank: int) -> nn.Module:
    """One member's layer [in, out], or two thin ones (rank-r SVD) if 0 < rank < min(in, out)."""
    in_features, out_features = weight.shape
    with torch.no_grad():
        if rank <= 0 or rank >= min(in_features, out_features):
            return MatMulLinear(weight, bias)
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)  # weight = u diag(s) vh
        root = s[:rank].sqrt()
        down = MatMulLinear(u[:, :rank] * root[None, :], None)  # [in, r]
        up = MatMulLinear(root[:, None] * vh[:rank], bias)  # [r, out]
        return nn.Sequential(down, up)


def export_onnx(module: ExportNet, example: tuple[np.ndarray, np.ndarray], path: str) -> str:
    """Write the export graph as ONNX with a dynamic batch dimension.

    The TorchScript exporter first, torch.export's (`dynamo=True`) where it is gone or
    fails. Measured on the same network, one thread (BENCHMARKS.md §37): TorchScript
    0.05-0.07 s per export, torch.export 4.8 s for a process's first and 1.7 s for each
    later one (tracing, decompositions and the op registry rebuilt per call); a night
    exports two to five networks, and on a fine-tune night that was the compress stage's
    largest cost. Both give the same nodes for the export graph (MatMul and Add: it holds
    no `nn.Linear`, so no `Gemm`, which the quantizer would skip) and the same outputs;
    a graph with a `Gemm` is refused and exported again the other way.
    """
    module.eval()
    # trace with two rows: torch.export specialises a dimension of size 1 wherever it meets
    # a broadcast, and the periodic embeddings' arithmetic would fix the batch at 1
    codes, numeric = (torch.from_numpy(np.concatenate([a, a])) for a in example)
    try:
        _export_torchscript(module, (codes, numeric), path)
    except Exception as error:  # noqa: BLE001 - any failure has the other exporter to try
        logger.info("compress: TorchScript export failed (%s); exporting with torch.export", error)
        _export_dynamo(module, (codes, numeric), path)
    strip_debug_info(path)
    return path


def _export_torchscript(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: str) -> None:
    """PyTorch's TorchScript-based exporter (deprecated since 2.9, still in 2.13)."""
    batch = {0: "batch"}
    with warnings.catch_warnings():
        # its deprecation notice, once per export: the fallback is in place for its removal
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            module,
            inputs,
            path,
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamo=False,
            opset_version=ONNX_OPSET,
            dynamic_axes={name: batch for name in (*INPUT_NAMES, OUTPUT_NAME)},
        )
    gemms = [node.name for node in onnx.load(path).graph.node if node.op_type == "Gemm"]
    if gemms:
        raise ValueError(f"the graph holds Gemm nodes {gemms}, which int8 quantisation skips")


def _export_dynamo(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: str) -> None:
    """PyTorch's torch.export-based exporter (the default since 2.9)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    torch.onnx.export(
        module,
        inputs,
        path,
        input_names=INPUT_NAMES,
        output_names=[OUTPUT_NAME],
        dynamo=True,
        opset_version=ONNX_OPSET,
        dynamic_shapes=({0: batch}, {0: batch}),
        external_data=False,
        verbose=False,
    )


def strip_debug_info(path: str) -> str:
    """Drop what only debugging needs (stack traces and names of the torch source per node,
    intermediate shapes): on a small network it is a third of the file."""
    model = onnx.load(path)
    del model.graph.value_info[:]
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    model.graph.doc_string = ""
    onnx.save(model, path)
    return path


def quantize_int8(fp32_path: str, int8_path: str) -> str:
    """Dynamic int8: weights stored as int8, activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32_path, int8_path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
    )
    return strip_debug_info(int8_path)


def integer_ops(path: str) -> dict[str, int]:
    """Counts of the integer op types in an ONNX graph (proof a quantized graph is quantized)."""
    counts: dict[str, int] = {}
    for node in onnx.load(path).graph.node:
        if "Integer" in node.op_type or node.op_type in (
            "DynamicQuantizeLinear",
            "DynamicQuantizeMatMul",
        ):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def prune_and_finetune(
    net: TabularNet,
    codes: np.ndarray,
    numeric: np.ndarray,
    labels: np.ndarray,
    sparsity: float,
    epochs: int,
    seed: int,
    batch_size: int = 1024,
    learning_rate: float = 5e-4,
) -> TabularNet:
    """Zero the smallest-magnitude weights of each member layer, then fine-tune with the mask."""
    seed_everything(seed)
    pruned = TabularNet(net.config)
    pruned.load_state_dict(net.state_dict())
    masks = {}
    for name, param in pruned.named_parameters():
        if name.startswith("mlp.") and name.endswith("weight"):
            # per member: each member is an independent model
            flat = param.detach().abs().reshape(param.shape[0], -1)
            cut = torch.quantile(flat, sparsity, dim=1, keepdim=True)
            masks[name] = (flat > cut).reshape(param.shape).float()
            with torch.no_grad():
                param.mul_(masks[name])
    params = dict(pruned.named_parameters())

    @torch.no_grad()
    def keep_pruned() -> None:
        for name, mask in masks.items():
            params[name].mul_(mask)

    optimizer = torch.optim.AdamW(pruned.parameters(), lr=learning_rate, weight_decay=0.0)
    targets = torch.from_numpy(labels.astype(np.float32))
    _fit_epochs(pruned, optimizer, codes, numeric, targets, epochs, seed, batch_size, keep_pruned)
    return pruned


def _fit_epochs(
    net: TabularNet,
    optimizer: torch.optim.Optimizer,
    codes: np.ndarray,
    numeric: np.ndarray,
    targets: torch.Tensor,
    epochs: int,
    seed: int,
    batch_size: int,
    after_step,
) -> None:
    """The plain mini-batch loop of the variants that train (pruning's fine-tune, the
    distilled student): seeded shuffles, member loss on `targets`, `after_step()` after
    each optimizer step; leaves `net` in eval mode."""
    t_codes, t_numeric = torch.from_numpy(codes), torch.from_numpy(numeric)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            member_loss(net(t_codes[batch], t_numeric[batch]), targets[batch]).backward()
            optimizer.step()
            after_step()
    net.eval()


def distill_student(
    teacher: TabularNet,
    codes: np.ndarray,
    numeric: np.ndarray,
    hidden: list[int],
    epochs: int,
    seed: int,
    learning_rate: float = 2e-3,
    batch_size: int = 1024,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> TabularNet:
    """A one-member student trained on the teacher's soft labels (its members' mean).

    Soft labels carry what the ensemble learned about each row's risk, which a hard 0/1
    label of a noisy target does not; that is why a network a fifteenth of the size can
    match it. Same embeddings layout as the teacher (periodic numerics included, trained
    afresh), so the same preprocessor feeds both.
    No dropout: the targets are already smooth, and the student is small.

    `initial_state` (a fine-tune night: the champion's student, whose teacher was the
    network tonight's teacher was fine-tuned from) replaces the random initialisation, so
    a few epochs can follow the teacher's move instead of learning it all again (when the
    move is small: on flights it was not, `CompressionConfig.distill_fine_tune_epochs`).
    """
    seed_everything(seed)
    student = TabularNet(student_config(teacher.config, hidden))
    if initial_state is not None:
        student.load_state_dict(initial_state)  # strict: a shape mismatch names the tensor
    soft = torch.from_numpy(predict_proba(teacher, codes, numeric).astype(np.float32))
    optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps_per_epoch = -(-len(soft) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=max(1, epochs * steps_per_epoch)
    )
    _fit_epochs(student, optimizer, codes, numeric, soft, epochs, seed, batch_size, schedule.step)
    return student


def student_config(teacher: NetConfig, hidden: list[int]) -> NetConfig:
    """The distilled student's shape: the teacher's inputs, `hidden` widths, one member."""
    return replace(teacher, hidden=list(hidden), dropout=0.0, members=1)


def warm_student_state(
    teacher: NetConfig, hidden: list[int], weights_path: str, config_path: str
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The champion's student weights when their shape is tonight's student's, and why not.

    Returns (state, note): state None means the student is trained from scratch, and the
    note says why (the run's log and the compression result carry it).
    """
    champion = NetConfig(**json.loads(Path(config_path).read_text()))
    wanted = student_config(teacher, hidden)
    if champion != wanted:
        return None, (
            f"the champion's student is {champion.hidden} over {champion.cardinalities} codes, "
            f"tonight's is {wanted.hidden} over {wanted.cardinalities}: trained from scratch"
        )
    return load_weights(weights_path), "warm-started from the champion's student"


def low_rank_ranks(net: TabularNet, fraction: float) -> list[int]:
    """SVD rank per member layer (0 = keep full): the first layer is fused and kept full."""
    layers = [m for m in net.mlp if isinstance(m, MemberLinear)]
    ranks = [0]
    for layer in layers[1:]:
        _, in_features, out_features = layer.weight.shape
        smallest = min(in_features, out_features)
        rank = max(1, int(round(smallest * fraction)))
        # a factorisation only pays when r*(in+out) < in*out
        ranks.append(
            rank if rank * (in_features + out_features) < in_features * out_features else 0
        )
    return ranks


def torch_latency_ms(
    net: TabularNet, codes: np.ndarray, numeric: np.ndarray, repeats: int, threads: int
) -> float:
    """Median wall time of one fp32 torch forward pass (eval, no grad) on these rows."""
    with torch_threads(threads):
        c, x = torch.from_numpy(codes), torch.from_numpy(numeric)
        net.eval()
        times = []
        with torch.no_grad():
            for _ in range(3):
                torch.sigmoid(net(c, x)).mean(dim=1)
            for _ in range(repeats):
                start = time.perf_counter()
                torch.sigmoid(net(c, x)).mean(dim=1)
                times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000


def blend_latency_ms(
    sess: ort.InferenceSession, tree, codes: np.ndarray, numeric: np.ndarray, repeats: int
) -> float:
    """Median wall time of one served blend call: the ONNX network, the tree, the blend."""
    for _ in range(3):
        blend_proba(onnx_proba(sess, codes, numeric), tree_proba(tree, codes, numeric), 0.5)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        blend_proba(onnx_proba(sess, codes, numeric), tree_proba(tree, codes, numeric), 0.5)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def onnx_latency_ms(
    sess: ort.InferenceSession, codes: np.ndarray, numeric: np.ndarray, repeats: int
) -> float:
    """Median wall time of one onnxruntime run on these rows."""
    feed = {"codes": codes.astype(np.int64), "numeric": numeric}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


@dataclass
class Variant:
    """One compressed form of the network, measured on the holdout."""

    name: str
    onnx_path: str
    size_bytes: int
    latency_ms_batch1: float
    latency_ms_batch1024: float
    roc_auc: float
    auc_drop: float
    integer_ops: dict[str, int] = field(default_factory=dict)
    within_budget: bool = False


@dataclass
class Compression:
    """The variants table, the reference fp32 torch model's numbers and the one kept."""

    variants: list[Variant]
    chosen: str
    chosen_onnx_path: str
    chosen_sha256: str
    reference_size_bytes: int
    reference_latency_ms_batch1: float
    reference_latency_ms_batch1024: float
    reference_auc: float
    auc_drop_budget: float
    predictions_path: str
    table_path: str
    # What is served: the chosen network variant alone, or blended with the tree that the
    # validation days chose (tasks/evaluation/blend.py). Network-only: the blend fields
    # stay None and `served_auc` is the chosen variant's.
    served_candidate: str = "network"
    served_roc_auc: float | None = None
    served_latency_ms_batch1: float | None = None
    blend_weight: float | None = None
    blend_threshold: float | None = None
    tree_path: str | None = None
    tree_size_bytes: int | None = None
    # which variants were tried: all of them, or fp32 + the champion's on a fine-tune night
    search: str = "all variants"
    # the distilled student's torch weights and shape (None: no student tonight), how it
    # started ("from scratch", or warm from the champion's student: the note says) and
    # how many epochs it trained; registered so the next fine-tune night can start there
    student_weights_path: str | None = None
    student_net_config_path: str | None = None
    student_start: str | None = None
    student_epochs: int | None = None

    @property
    def chosen_variant(self) -> Variant:
        return next(v for v in self.variants if v.name == self.chosen)

    @property
    def served_auc(self) -> float:
        """Holdout AUC of what the registered model serves (network variant or blend)."""
        return self.chosen_variant.roc_auc if self.served_roc_auc is None else self.served_roc_auc

    @property
    def served_latency_ms(self) -> float:
        """Batch-1 latency of what is served: the ONNX network, plus the tree in a blend."""
        if self.served_latency_ms_batch1 is None:
            return self.chosen_variant.latency_ms_batch1
        return self.served_latency_ms_batch1

    def size_ratio(self) -> float:
        return self.reference_size_bytes / self.chosen_variant.size_bytes

    def speedup_batch1(self) -> float:
        return self.reference_latency_ms_batch1 / self.chosen_variant.latency_ms_batch1

    def rows(self) -> list[dict]:
        """The table as rows, with ratios vs the fp32 torch model (for artifacts and MLflow)."""
        out = [
            {
                "variant": "fp32-torch (reference)",
                "size_bytes": self.reference_size_bytes,
                "size_ratio": 1.0,
                "ms_batch1": round(self.reference_latency_ms_batch1, 4),
                "speedup_batch1": 1.0,
                "ms_batch1024": round(self.reference_latency_ms_batch1024, 3),
                "speedup_batch1024": 1.0,
                "roc_auc": round(self.reference_auc, 5),
                "auc_drop": 0.0,
                "within_budget": True,
                "chosen": False,
            }
        ]
        for v in self.variants:
            out.append(
                {
                    "variant": v.name,
                    "size_bytes": v.size_bytes,
                    "size_ratio": round(self.reference_size_bytes / v.size_bytes, 2),
                    "ms_batch1": round(v.latency_ms_batch1, 4),
                    "speedup_batch1": round(
                        self.reference_latency_ms_batch1 / v.latency_ms_batch1, 2
                    ),
                    "ms_batch1024": round(v.latency_ms_batch1024, 3),
                    "speedup_batch1024": round(
                        self.reference_latency_ms_batch1024 / v.latency_ms_batch1024, 2
                    ),
                    "roc_auc": round(v.roc_auc, 5),
                    "auc_drop": round(v.auc_drop, 5),
                    "within_budget": v.within_budget,
                    "chosen": v.name == self.chosen,
                }
            )
        return out


def choose_variant(variants: list[Variant], budget: float) -> Variant:
    """The smallest variant whose AUC drop is within budget (fp32 ONNX always qualifies).

    Ties in size (a pruned dense graph is as large as the unpruned one) go to the smaller
    AUC drop: sparsity buys nothing without sparse kernels or a compressed file format.
    """
    eligible = [v for v in variants if v.auc_drop <= budget]
    if not eligible:  # cannot happen while fp32 ONNX is a variant, but say so if it does
        raise ValueError(
            f"compression: no variant within the AUC drop budget {budget:g}: "
            + ", ".join(f"{v.name} drop {v.auc_drop:.4f}" for v in variants)
        )
    return min(eligible, key=lambda v: (v.size_bytes, v.auc_drop))


def holdout_rows(
    spec: DatasetSpec, features: FeatureSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The holdout's labels and encoded inputs (int64 codes, numerics), as the variants
    are scored and timed on them."""
    holdout = Lake.of(features.holdout_path).read_parquet(features.holdout_path)
    codes, numeric = load_preprocessor(features.preprocessor_path).transform(
        spec.feature_frame(holdout)
    )
    return holdout["label"].to_numpy().astype(int), codes.astype(np.int64), numeric


@dataclass
class BuiltVariants:
    """The variants as built and scored on the holdout, not yet timed (`build_variants`).

    Why two steps: building them (the student's epochs, pruning's fine-tune, the exports)
    needs only the trained network, so the flow runs it beside the evaluate stage, on the
    core the evaluation leaves idle; timing them needs the cores to itself (a latency taken
    beside two tree fits would measure the fits), and the served form needs the
    evaluation's blend, so both come after (`finish_compression`).
    """

    out_dir: str  # where the ONNX files are (a local folder: onnxruntime reads files)
    holdout: tuple[np.ndarray, np.ndarray, np.ndarray]  # `holdout_rows`: read and encoded once
    paths: dict[str, str]
    probas: dict[str, np.ndarray]
    reference_auc: float
    reference_size: int
    student_files: dict = field(default_factory=dict)
    only: str | None = None


@steady_heap()  # pruning's fine-tune and distillation are training loops (allocator.py)
def build_variants(
    spec: DatasetSpec,
    features: FeatureSet,
    trained: TrainResult,
    out_dir: str,
    config: CompressionConfig,
    seed: int,
    log: logging.Logger | logging.LoggerAdapter = logger,
    only: str | None = None,
    warm_student: tuple[str, str] | None = None,
) -> BuiltVariants:
    """Build the variants and score them on the holdout; write their ONNX files to `out_dir`.

    Long on purpose: it reads as the list of variants it builds. Compression applies to
    the network; `finish_compression` times them, keeps one and adds the blend.

    `only` (a fine-tune night: the champion's served variant) builds just that variant
    and fp32, the fallback that is always within budget: the architecture is the
    champion's, so the search's answer is known; the budget still decides on tonight's
    numbers. `warm_student` (the champion's student: weights and net-config paths) starts
    the distilled student from its weights for `distill_fine_tune_epochs` when its shape
    is tonight's student's; the budget judges it like any other variant.
    """

    def wanted(name: str) -> bool:
        return only is None or name in ("fp32", only)

    lake = Lake.of(features.holdout_path)
    preprocessor = load_preprocessor(features.preprocessor_path)
    y_true, codes, numeric = holdout_rows(spec, features)
    one = (codes[:1], numeric[:1])

    net = load_network(trained.weights_path, trained.net_config_path)
    # torch's work here in `config.train_threads` threads (0: every core; the field says why)
    busy = config.train_threads
    with torch_threads(busy):
        reference_auc = float(roc_auc_score(y_true, predict_proba(net, codes, numeric)))
    threads = config.latency_threads

    if not Lake.of(out_dir).is_local:
        # onnxruntime and the quantizer read and write local files; the variants live on
        # the flow's machine until registration uploads the chosen one to MLflow
        out_dir = tempfile.mkdtemp(prefix="nightshift-compression-")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    paths["fp32"] = export_onnx(ExportNet(net), one, f"{out_dir}/fp32.onnx")
    if wanted("int8"):
        paths["int8"] = quantize_int8(paths["fp32"], f"{out_dir}/int8.onnx")

    prune = config.prune_sparsity > 0 and wanted("pruned-int8")
    distill = config.distill_epochs > 0 and (wanted("distilled-fp32") or wanted("distilled-int8"))
    if prune or distill:
        train = lake.read_parquet(features.train_path)
        t_codes, t_numeric = preprocessor.transform(spec.feature_frame(train))
        t_codes = t_codes.astype(np.int64)
    if prune:
        with torch_threads(busy):
            pruned = prune_and_finetune(
                net,
                t_codes,
                t_numeric,
                train["label"].to_numpy(),
                config.prune_sparsity,
                config.prune_finetune_epochs,
                seed,
            )
        pruned_fp32 = export_onnx(ExportNet(pruned), one, f"{out_dir}/pruned-fp32.onnx")
        paths["pruned-int8"] = quantize_int8(pruned_fp32, f"{out_dir}/pruned-int8.onnx")
        os.remove(pruned_fp32)

    student_files: dict = {}
    if distill:
        started = time.perf_counter()
        initial, student_start = None, "from scratch"
        if warm_student is not None and config.distill_fine_tune_epochs > 0:
            initial, student_start = warm_student_state(
                net.config, config.distill_hidden, *warm_student
            )
        epochs = config.distill_fine_tune_epochs if initial is not None else config.distill_epochs
        with torch_threads(busy):
            student = distill_student(
                net,
                t_codes,
                t_numeric,
                config.distill_hidden,
                epochs,
                seed,
                config.distill_learning_rate,
                initial_state=initial,
            )
        log.info(
            "compress: distilled a %s student (%d weights; the teacher has %d), %d epoch(s) "
            "%s, in %.1f s",
            "x".join(map(str, config.distill_hidden)),
            sum(p.numel() for p in student.parameters()),
            sum(p.numel() for p in net.parameters()),
            epochs,
            student_start,
            time.perf_counter() - started,
        )
        # kept (and registered) so the next fine-tune night can start its student here
        student_files = {
            "student_weights_path": f"{out_dir}/student_weights.pt",
            "student_net_config_path": f"{out_dir}/student_net_config.json",
            "student_start": student_start,
            "student_epochs": epochs,
        }
        torch.save(student.state_dict(), student_files["student_weights_path"])
        Path(student_files["student_net_config_path"]).write_text(
            json.dumps(student.config.to_dict())
        )
        student_fp32 = export_onnx(ExportNet(student), one, f"{out_dir}/distilled-fp32.onnx")
        if wanted("distilled-fp32"):
            paths["distilled-fp32"] = student_fp32
        if wanted("distilled-int8"):
            paths["distilled-int8"] = quantize_int8(student_fp32, f"{out_dir}/distilled-int8.onnx")

    ranks = low_rank_ranks(net, config.low_rank_fraction)
    if any(ranks) and (wanted("lowrank-fp32") or wanted("lowrank-int8")):
        low_rank = export_onnx(ExportNet(net, ranks), one, f"{out_dir}/lowrank-fp32.onnx")
        if wanted("lowrank-fp32"):
            paths["lowrank-fp32"] = low_rank
        if wanted("lowrank-int8"):
            paths["lowrank-int8"] = quantize_int8(low_rank, f"{out_dir}/lowrank-int8.onnx")

    probas = {
        name: onnx_proba(session(path, threads), codes, numeric) for name, path in paths.items()
    }
    return BuiltVariants(
        out_dir=out_dir,
        holdout=(y_true, codes, numeric),
        paths=paths,
        probas=probas,
        reference_auc=reference_auc,
        reference_size=len(Lake.of(trained.weights_path).fs.cat(trained.weights_path)),
        student_files=student_files,
        only=only,
    )


def finish_compression(
    trained: TrainResult,
    built: BuiltVariants,
    config: CompressionConfig,
    log: logging.Logger | logging.LoggerAdapter = logger,
    blend: BlendChoice | None = None,
) -> Compression:
    """Time the built variants and the fp32 torch reference the same way, keep the smallest
    within the AUC budget and, when `blend` is the candidate, measure it blended with the
    tree as served (holdout AUC, batch-1 latency). Writes the table next to the variants.

    Long on purpose: the one table that measures every variant the same way.
    """
    y_true, codes, numeric = built.holdout
    one = (codes[:1], numeric[:1])
    rows_1024 = np.arange(1024) % len(codes)
    batch = (codes[rows_1024], numeric[rows_1024])
    net = load_network(trained.weights_path, trained.net_config_path)
    threads, repeats = config.latency_threads, config.latency_repeats
    reference = {
        "ms1": torch_latency_ms(net, *one, repeats, threads),
        "ms1024": torch_latency_ms(net, *batch, max(5, repeats // 10), threads),
    }
    reference_auc, probas = built.reference_auc, built.probas

    variants = []
    for name, path in built.paths.items():
        sess = session(path, threads)
        auc = float(roc_auc_score(y_true, probas[name]))
        variants.append(
            Variant(
                name=name,
                onnx_path=path,
                size_bytes=_stored_size(path),
                latency_ms_batch1=onnx_latency_ms(sess, *one, repeats),
                latency_ms_batch1024=onnx_latency_ms(sess, *batch, max(5, repeats // 10)),
                roc_auc=auc,
                auc_drop=reference_auc - auc,
                integer_ops=integer_ops(path),
                within_budget=reference_auc - auc <= config.auc_drop_budget,
            )
        )
    chosen = choose_variant(variants, config.auc_drop_budget)
    served_proba = probas[chosen.name]
    served: dict = {}
    if blend is not None and blend.is_blend:
        tree = load_tree(blend.tree_path)
        served_proba = blend_proba(served_proba, tree_proba(tree, codes, numeric), blend.weight)
        served = {
            "served_candidate": "blend",
            "served_roc_auc": float(roc_auc_score(y_true, served_proba)),
            "served_latency_ms_batch1": blend_latency_ms(
                session(chosen.onnx_path, threads), tree, *one, repeats
            ),
            "blend_weight": blend.weight,
            "blend_threshold": blend.threshold,
            "tree_path": blend.tree_path,
            "tree_size_bytes": os.path.getsize(blend.tree_path),
        }
        log.info(
            "compress: serving %s blended with the tree (network weight %.2f): holdout AUC "
            "%.4f, %.3f ms at batch 1",
            chosen.name,
            blend.weight,
            served["served_roc_auc"],
            served["served_latency_ms_batch1"],
        )
    predictions_path = f"{built.out_dir}/served_predictions.npy"
    np.save(predictions_path, served_proba)
    compression = Compression(
        variants=variants,
        chosen=chosen.name,
        chosen_onnx_path=chosen.onnx_path,
        chosen_sha256=sha256_file(chosen.onnx_path),
        reference_size_bytes=built.reference_size,
        reference_latency_ms_batch1=reference["ms1"],
        reference_latency_ms_batch1024=reference["ms1024"],
        reference_auc=reference_auc,
        auc_drop_budget=config.auc_drop_budget,
        predictions_path=predictions_path,
        table_path=f"{built.out_dir}/compression.json",
        **served,
        **built.student_files,
        search="all variants"
        if built.only is None
        else f"fp32 + {built.only} (the champion's variant)",
    )
    Path(compression.table_path).write_text(
        json.dumps({"chosen": chosen.name, "rows": compression.rows()}, indent=2)
    )
    for row in compression.rows():
        log.info("compress: %s", row)
    return compression


def compress_network(
    spec: DatasetSpec,
    features: FeatureSet,
    trained: TrainResult,
    out_dir: str,
    config: CompressionConfig,
    seed: int,
    log: logging.Logger | logging.LoggerAdapter = logger,
    blend: BlendChoice | None = None,
    only: str | None = None,
    warm_student: tuple[str, str] | None = None,
) -> Compression:
    """Build, measure and choose among the variants in one go (`build_variants`, then
    `finish_compression`); the ONNX files go to `out_dir`."""
    built = build_variants(spec, features, trained, out_dir, config, seed, log, only, warm_student)
    return finish_compression(trained, built, config, log, blend)


def _stored_size(path: str) -> int:
    """Bytes the artifact takes on disk (the ONNX file; weights are embedded)."""
    return os.path.getsize(path)


def to_dict(compression: Compression) -> dict:
    return asdict(compression)


def build_compression(
    ctx: RunContext,
    features: FeatureSet,
    trained: TrainResult,
    config: CompressionConfig,
    log: logging.Logger | logging.LoggerAdapter = logger,
    only: str | None = None,
    warm_student: tuple[str, str] | None = None,
) -> BuiltVariants:
    """The compress stage's first step, which needs no evaluation: the variants built and
    scored (`build_variants`). `only` limits the search to fp32 and that variant (a
    fine-tune night: the champion's), and `warm_student` starts a distilled student from
    the champion's."""
    if only:
        log.info("compress: fine-tune night, trying only fp32 and the champion's %s", only)
    return build_variants(
        ctx.spec,
        features,
        trained,
        ctx.run_dir("compression"),
        config,
        ctx.seed,
        log,
        only,
        warm_student,
    )


def compress(
    ctx: RunContext,
    features: FeatureSet,
    trained: TrainResult,
    config: CompressionConfig,
    log: logging.Logger | logging.LoggerAdapter = logger,
    blend: BlendChoice | None = None,
    only: str | None = None,
    warm_student: tuple[str, str] | None = None,
    built: BuiltVariants | None = None,
) -> Compression:
    """The compress stage: time the variants, keep the smallest within budget.

    `built` is `build_compression`'s answer (the flow builds the variants beside the
    evaluate stage); without it they are built here first, with `only` and
    `warm_student`. `blend` is the evaluation's choice (`Evaluation.blend_choice`): when
    it is the candidate, the kept network variant is served blended with the tree.
    """
    if built is None:
        built = build_compression(ctx, features, trained, config, log, only, warm_student)
    compression = finish_compression(trained, built, config, log, blend)
    chosen = compression.chosen_variant
    log.info(
        "compress: kept %s: %d bytes (%.1fx smaller), %.3f ms at batch 1 (%.1fx faster), "
        "AUC drop %.4f (budget %.4f)",
        chosen.name,
        chosen.size_bytes,
        compression.size_ratio(),
        chosen.latency_ms_batch1,
        compression.speedup_batch1(),
        chosen.auc_drop,
        compression.auc_drop_budget,
    )
    return write_result(ctx, "compress", compression)

"""Distillation: the student learns the teacher's probabilities, not just the labels."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import torch

from tasks.release.compress import (
    ExportNet,
    distill_student,
    prune_and_finetune,
    warm_student_state,
)
from tasks.training.model import NetConfig, TabularNet, predict_proba, torch_threads


def _teacher(seed: int = 0) -> tuple[TabularNet, np.ndarray, np.ndarray]:
    """A random 4-member network: a smooth, non-trivial function of codes and numerics."""
    torch.manual_seed(seed)
    teacher = TabularNet(NetConfig(cardinalities=[6, 3], n_numeric=4, hidden=[32, 16], members=4))
    with torch.no_grad():  # spread the probabilities over (0, 1), away from 0.5
        for layer in teacher.mlp:
            if hasattr(layer, "weight"):
                layer.weight.mul_(2.0)
    teacher.eval()
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, 6, 4000), rng.integers(0, 3, 4000)], axis=1)
    numeric = rng.normal(size=(4000, 4)).astype(np.float32)
    return teacher, codes.astype(np.int64), numeric


def test_the_student_is_one_narrow_member_and_tracks_the_teacher():
    teacher, codes, numeric = _teacher()
    target = predict_proba(teacher, codes, numeric)
    untrained = TabularNet(
        NetConfig(cardinalities=[6, 3], n_numeric=4, hidden=[16], dropout=0.0, members=1)
    )
    student = distill_student(
        teacher, codes, numeric, hidden=[16], epochs=10, seed=1, batch_size=128
    )

    assert student.config.members == 1 and student.config.hidden == [16]
    assert sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in teacher.parameters()
    )
    learned = predict_proba(student, codes, numeric)
    before = np.abs(predict_proba(untrained, codes, numeric) - target).mean()
    after = np.abs(learned - target).mean()
    assert after < 0.4 * before, (before, after)
    # it ranks rows as the teacher does
    assert np.corrcoef(learned, target)[0, 1] > 0.7


def test_distillation_is_reproducible_and_the_export_graph_matches_it():
    teacher, codes, numeric = _teacher(seed=2)
    first = distill_student(teacher, codes, numeric, hidden=[8, 4], epochs=2, seed=5)
    again = distill_student(teacher, codes, numeric, hidden=[8, 4], epochs=2, seed=5)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        exported = ExportNet(first)(torch.from_numpy(codes), torch.from_numpy(numeric)).numpy()
    np.testing.assert_allclose(exported, predict_proba(first, codes, numeric), atol=1e-6)


def _nudged(teacher: TabularNet, scale: float = 0.05, seed: int = 3) -> TabularNet:
    """The teacher after a small move, as a one-epoch fine-tune moves the champion."""
    generator = torch.Generator().manual_seed(seed)
    moved = TabularNet(teacher.config)
    moved.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for param in moved.parameters():
            param.add_(scale * param.std() * torch.randn(param.shape, generator=generator))
    moved.eval()
    return moved


def test_a_warm_student_follows_a_moved_teacher_in_one_epoch_better_than_a_cold_one():
    teacher, codes, numeric = _teacher(seed=4)
    champion_student = distill_student(
        teacher, codes, numeric, hidden=[16], epochs=10, seed=1, batch_size=128
    )
    tonight = _nudged(teacher)
    target = predict_proba(tonight, codes, numeric)
    warm = distill_student(
        tonight, codes, numeric, hidden=[16], epochs=1, seed=1, batch_size=128,
        initial_state=champion_student.state_dict(),
    )  # fmt: skip
    cold = distill_student(tonight, codes, numeric, hidden=[16], epochs=1, seed=1, batch_size=128)

    warm_error = np.abs(predict_proba(warm, codes, numeric) - target).mean()
    cold_error = np.abs(predict_proba(cold, codes, numeric) - target).mean()
    assert warm_error < 0.7 * cold_error, (warm_error, cold_error)


def test_the_champions_student_is_used_only_when_its_shape_is_tonights(tmp_path):
    teacher, codes, numeric = _teacher(seed=6)
    student = distill_student(teacher, codes, numeric, hidden=[8], epochs=1, seed=0)
    weights, config = tmp_path / "student_weights.pt", tmp_path / "student_net_config.json"
    torch.save(student.state_dict(), weights)
    config.write_text(json.dumps(student.config.to_dict()))

    state, note = warm_student_state(teacher.config, [8], str(weights), str(config))
    assert state is not None and "warm-started" in note
    assert all(torch.equal(state[k], v) for k, v in student.state_dict().items())

    wider = dataclasses.replace(teacher.config, cardinalities=[7, 3])  # a refitted vocabulary
    for teacher_config, hidden in ((teacher.config, [16]), (wider, [8])):
        state, note = warm_student_state(teacher_config, hidden, str(weights), str(config))
        assert state is None and "from scratch" in note, note


def _wide_teacher() -> tuple[TabularNet, np.ndarray, np.ndarray]:
    """A teacher and rows big enough for torch to split a batch's ops across threads."""
    torch.manual_seed(7)
    teacher = TabularNet(
        NetConfig(cardinalities=[40, 8], n_numeric=12, hidden=[128, 64], members=4)
    )
    with torch.no_grad():  # spread the probabilities over (0, 1), away from 0.5
        for layer in teacher.mlp:
            if hasattr(layer, "weight"):
                layer.weight.mul_(3.0)
    teacher.eval()
    rng = np.random.default_rng(7)
    codes = np.stack([rng.integers(0, 40, 6000), rng.integers(0, 8, 6000)], axis=1)
    return teacher, codes.astype(np.int64), rng.normal(size=(6000, 12)).astype(np.float32)


def test_compressions_training_is_the_same_network_on_one_torch_thread_or_two():
    # CompressionConfig.train_threads (1) may only change the speed: the student, pruning's
    # fine-tune and the teacher's soft labels come out identical to two threads'
    teacher, codes, numeric = _wide_teacher()
    labels = (predict_proba(teacher, codes, numeric) > 0.5).astype(np.float32)
    built = {}
    for threads in (1, 2):
        with torch_threads(threads):
            assert torch.get_num_threads() == threads
            built[threads] = (
                predict_proba(teacher, codes, numeric),
                distill_student(teacher, codes, numeric, hidden=[64, 32], epochs=1, seed=3),
                prune_and_finetune(teacher, codes, numeric, labels, 0.5, epochs=1, seed=3),
            )
    np.testing.assert_array_equal(built[1][0], built[2][0])
    for one, two in zip(built[1][1:], built[2][1:], strict=True):
        for name, value in one.state_dict().items():
            assert torch.equal(value, two.state_dict()[name]), name
    assert built[1][0].std() > 0.05  # soft labels that say something


def test_torch_threads_restores_the_process_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0: every core
        assert torch.get_num_threads() == (os.cpu_count() or 1)
    assert torch.get_num_threads() == before

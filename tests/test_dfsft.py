"""Diffusion-forcing SFT: FastVideo's per-chunk noise indices and Gaussian loss weight; the tiny causal
recipe trains in both schemas (the same steps), resumes bit-exactly, 8 simulated devices give the 1-device
run; a chunk size other than the student's blocks is one error."""
from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from fvjax.methods.dfsft.config import DFSFTConfig
from fvjax.methods.dfsft.update import index_weights
from fvjax.methods.kd.update import block_step_indices
from training_utils import (assert_resume_is_bit_exact, assert_same_metric, assert_state_close, checkpoint_arrays,
                            example_recipe, make_data, metrics_by_step, train_in_process, train_in_subprocess,
                            train_once, write_recipe)

STEPS = 6


def test_index_weights_are_fastvideos():
    # DiffusionForcingSFTMethod._build_training_weights, in torch.
    n = 1000.0
    x = torch.arange(n, dtype=torch.float32)
    y = torch.exp(-2 * ((x - n / 2) / n) ** 2)
    shifted = y - y.min()
    expected = (shifted * (n / shifted.sum())).numpy()
    got = index_weights(1000)
    # (float32 exp of numpy and torch differ in the last bit; y - min(y) cancels near the ends)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert got.min() == 0.0 and abs(got.mean() - 1.0) < 1e-5 and np.argmax(got) == 500


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (0.02, 0.98), (0.5, 0.5), (1.0, 1.0), (0.3, 0.7)])
def test_index_range_is_fastvideos(low, high):
    n = 1000   # DiffusionForcingSFTMethod._parse_timestep_index_range
    lo, hi = max(0, min(int(low * n), n - 1)), max(0, min(int(high * n), n - 1))
    if hi <= lo:
        hi = min(n - 1, lo + 1)
    assert DFSFTConfig(min_timestep_ratio=low, max_timestep_ratio=high).index_range() == (lo, hi + 1)


def test_chunk_indices_share_a_level_per_chunk_last_one_short():
    index = np.asarray(block_step_indices(jax.random.key(0), 64, 7, 3, 10, 20))
    assert index.shape == (64, 7) and index.min() >= 10 and index.max() < 20
    for start, end in ((0, 3), (3, 6), (6, 7)):
        assert np.all(index[:, start:end] == index[:, start:start + 1])
    assert np.any(index[:, 0] != index[:, 3])   # chunks are independent
    assert len(np.unique(index)) == 10


def dfsft_recipe(data: str, output_dir: Path, name: str = "tiny_dfsft", **training) -> dict:
    return example_recipe(name, data, output_dir, STEPS, **training)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "tiny", num_samples=4)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("straight")
    return train_once(root, dfsft_recipe(data, root / "out"))


def test_trains_and_fastvideo_schema_is_the_same_experiment(tmp_path, data, straight_run):
    rows = metrics_by_step(straight_run)
    assert sorted(rows) == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["student/dfsft_loss"]) and r["student/grad_norm"] > 0 for r in rows.values())
    twin = train_once(tmp_path, dfsft_recipe(data, tmp_path / "fv", "tiny_dfsft_fastvideo_train"))
    assert_same_metric(straight_run, twin, "student/dfsft_loss")


def test_resume_is_bit_exact(tmp_path, data, straight_run):
    assert_resume_is_bit_exact(straight_run, dfsft_recipe(data, tmp_path / "resumed"), tmp_path, STEPS // 2, STEPS)


def test_eight_devices_match_one_device(tmp_path, data, straight_run):
    eight = tmp_path / "eight"
    train_in_subprocess(write_recipe(tmp_path / "eight.yaml", dfsft_recipe(
        data, eight, num_gpus=8, sp_size=2, hsdp_replicate_dim=2, hsdp_shard_dim=4, train_batch_size=1)))
    m1, m8 = metrics_by_step(straight_run), metrics_by_step(eight)
    for step in range(1, STEPS + 1):
        np.testing.assert_allclose(m8[step]["student/dfsft_loss"], m1[step]["student/dfsft_loss"], rtol=1e-5)
    p1, p8 = checkpoint_arrays(straight_run, STEPS), checkpoint_arrays(eight, STEPS)
    assert_state_close(p1, p8)


def test_chunk_size_other_than_the_students_blocks_is_one_error(tmp_path, data, capsys):
    recipe = dfsft_recipe(data, tmp_path / "out")
    recipe["method_config"]["chunk_size"] = 3     # the tiny-causal-framewise student has 1-frame blocks
    path = write_recipe(tmp_path / "r.yaml", recipe)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"fvjax: error: {path}: method_config.chunk_size: is 3 but the causal student's num_frames_per_block "
                   "is 1; they must be equal (FastVideo checks the same); training cannot start")


def test_step_flops():
    from fvjax.methods import get_method

    assert get_method("dfsft").step_flops(DFSFTConfig(), {"student": 5.0}, 4) == 60.0

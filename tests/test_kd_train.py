"""KD (ODE initialisation) end to end on a tiny causal student: the trajectory cache is made at train
start, the regression loss falls on it, FastVideo's current schema (KDCausalMethod, WanCausalModel) trains
the same experiment, resume after SIGKILL is bit-exact, 8 simulated devices give the 1-device run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from fvjax.methods.kd import cache
from training_utils import (REPO, assert_same_arrays, assert_state_close, checkpoint_arrays,
                            kill_after_checkpoint, make_data, metrics_by_step, train_in_process,
                            train_in_subprocess, write_recipe)

STEPS = 30
HALF = STEPS // 2


def kd_recipe(data: str, cache_dir: Path, output_dir: Path, name: str = "tiny_kd", **training) -> dict:
    """configs/examples/<name>.yaml (either schema) with test paths and `training` (flat) overrides."""
    recipe = yaml.safe_load((REPO / f"configs/examples/{name}.yaml").read_text())
    if "method_config" in recipe:
        recipe["training"].update(data_path=str(data), output_dir=str(output_dir), **training)
        recipe["method_config"]["teacher_path_cache"] = str(cache_dir)
    else:
        recipe["training"]["data"]["data_path"] = str(data)
        recipe["training"]["checkpoint"]["output_dir"] = str(output_dir)
        recipe["method"]["teacher_path_cache"] = str(cache_dir)
    return recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "tiny", num_samples=4)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kd") / "cache"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data, cache_dir):
    """STEPS steps without interruption (the cache made at their start), checkpoints every HALF steps."""
    root = tmp_path_factory.mktemp("straight")
    recipe = write_recipe(root / "recipe.yaml", kd_recipe(data, cache_dir, root / "out", max_train_steps=STEPS,
                                                          training_state_checkpointing_steps=HALF))
    assert train_in_process(recipe) == 0
    return root / "out"


def test_cache_made_at_train_start(straight_run, cache_dir):
    assert cache.is_complete(cache_dir)
    assert sorted(p.name for p in (cache_dir / "samples").iterdir()) == [f"{i:08d}.safetensors" for i in range(4)]


def test_regression_loss_falls_on_cached_trajectories(straight_run):
    rows = metrics_by_step(straight_run)
    losses = [rows[s]["student/kd_loss"] for s in range(1, STEPS + 1)]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    # Measured: ~0.85 -> ~0.35 in 30 steps (4 trajectories, lr 1e-3); windows of 5 steps (the step
    # indices are random per block).
    assert last < 0.6 * first, (first, last)
    # Per-block indices: the mean index of a step is not always a whole number (blocks differ).
    assert any(rows[s]["student/mean_step_index"] % 1 for s in rows)
    assert (straight_run / "student" / "config.json").is_file()


def test_fastvideo_schema_trains_the_same_experiment(tmp_path, data, cache_dir, straight_run):
    """KDCausalMethod + WanCausalModel (tiny_kd_fastvideo_train.yaml) gives the Phase-3 recipe's steps."""
    out = tmp_path / "out"
    recipe = kd_recipe(data, cache_dir, out, name="tiny_kd_fastvideo_train")
    recipe["training"]["loop"]["max_train_steps"] = 3
    recipe["training"]["checkpoint"].update(training_state_checkpointing_steps=0, checkpoints_total_limit=0)
    assert train_in_process(write_recipe(tmp_path / "fv.yaml", recipe)) == 0
    got, want = metrics_by_step(out), metrics_by_step(straight_run)
    for step in (1, 2, 3):
        assert got[step]["student/kd_loss"] == want[step]["student/kd_loss"], step


def test_resume_after_sigkill_is_bit_exact(tmp_path, data, cache_dir, straight_run):
    killed = tmp_path / "killed"
    long = write_recipe(tmp_path / "long.yaml", kd_recipe(data, cache_dir, killed, max_train_steps=100 * STEPS,
                                                          training_state_checkpointing_steps=HALF))
    assert kill_after_checkpoint(long, killed, HALF) == -9
    resumed = tmp_path / "resumed"
    recipe = write_recipe(tmp_path / "recipe.yaml", kd_recipe(data, cache_dir, resumed, max_train_steps=STEPS,
                                                              training_state_checkpointing_steps=HALF))
    assert train_in_process(recipe, "--resume-from-checkpoint", str(killed / "checkpoints" / str(HALF))) == 0
    expected, got = checkpoint_arrays(straight_run, STEPS), checkpoint_arrays(resumed, STEPS)
    assert expected.keys() == got.keys() and any("opt_state" in k for k in got)
    assert_same_arrays(expected, got)
    straight, after = metrics_by_step(straight_run), metrics_by_step(resumed)
    assert sorted(after) == list(range(HALF + 1, STEPS + 1))
    for step in after:
        assert after[step]["student/kd_loss"] == straight[step]["student/kd_loss"], step


def test_eight_devices_match_one_device(tmp_path, data, cache_dir, straight_run):
    # 8 devices: 2 replicas x 2 fsdp x 2 sp; 4 data-parallel groups of 1 sample = the straight run's batch of 4.
    eight = tmp_path / "eight"
    train_in_subprocess(write_recipe(tmp_path / "eight.yaml", kd_recipe(
        data, cache_dir, eight, max_train_steps=4, training_state_checkpointing_steps=4, num_gpus=8, sp_size=2,
        hsdp_replicate_dim=2, hsdp_shard_dim=4, train_batch_size=1)))
    m1, m8 = metrics_by_step(straight_run), metrics_by_step(eight)
    for step in range(1, 5):
        np.testing.assert_allclose(m8[step]["student/kd_loss"], m1[step]["student/kd_loss"], rtol=1e-5)
    one = tmp_path / "one"
    train_in_process(write_recipe(tmp_path / "one.yaml", kd_recipe(
        data, cache_dir, one, max_train_steps=4, training_state_checkpointing_steps=4)))
    p1, p8 = checkpoint_arrays(one, 4), checkpoint_arrays(eight, 4)
    assert_state_close(p1, p8)


def test_step_flops_for_the_mfu_report():
    """One student forward and its backward per sample (the teacher's trajectories are made before training),
    counted by each role's own family: the causal student's block-causal forward, not the teacher's."""
    from fvjax.recipe import load_recipe
    from fvjax.sharding.logical import use_rules
    from fvjax.sharding.mesh import make_mesh, select_devices
    from fvjax.sharding.rules import rules_for
    from fvjax.training.aot import step_flops
    from fvjax.training.roles import build_runtime

    recipe = load_recipe(REPO / "configs/examples/tiny_kd.yaml")
    mesh = make_mesh(recipe.mesh, select_devices(recipe.mesh))
    rules = rules_for(recipe.mesh)[1]
    with use_rules(mesh, rules):
        runtime = build_runtime(recipe, mesh, rules, abstract=True)
    student = runtime.models["student"]
    forward = student.family.forward_flops(student.config, (16, 3, 8, 8), 512)
    assert student.family.name == "wan_causal" and runtime.models["teacher"].family.name == "wan"
    assert step_flops(recipe, runtime) == 3 * forward * 4

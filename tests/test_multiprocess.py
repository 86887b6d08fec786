"""Multi-process training as on a multi-host slice, on this machine: 2 processes x 4 CPU devices
(`jax.distributed` on 127.0.0.1, gloo collectives) give the 1 process x 8 devices run of the tiny finetune
and DMD2 recipes, and checkpoints move between process counts and device counts: written by 2 processes,
resumed by 1 process on 4 devices, and the other way round, the continued losses are the uninterrupted
run's."""
from __future__ import annotations

import os
import socket
import subprocess

import numpy as np
import pytest

from training_utils import (REPO, checkpoint_arrays, finetune_recipe, make_data, metrics_by_step, tiny_dmd2_recipe,
                            train_command, write_recipe)

STEPS, HALF = 4, 2
# 8 devices: 2 replicas x 2 fsdp x 2 sp; global batch 4 (train_batch_size 1 per data-parallel group).
EIGHT = dict(num_gpus=8, sp_size=2, hsdp_replicate_dim=2, hsdp_shard_dim=4, train_batch_size=1)
FOUR = dict(num_gpus=4, sp_size=1, hsdp_replicate_dim=1, hsdp_shard_dim=4, train_batch_size=1)
KEYS = {"finetune": ("student/loss", "student/grad_norm"), "dmd2": ("student/dmd_loss", "critic/flow_loss")}


def _recipe(method, data, out, **training) -> dict:
    recipe = finetune_recipe(data, out) if method == "finetune" else tiny_dmd2_recipe(data, out)
    recipe["training"].update(max_train_steps=STEPS, training_state_checkpointing_steps=HALF,
                              checkpoints_total_limit=0, **training)
    return recipe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(recipe_path, processes: int, devices_each: int, *flags: str) -> None:
    """The trainer as `processes` processes of `devices_each` CPU devices each."""
    base = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_each}",
            "JAX_PLATFORMS": "cpu", "PJRT_NPROC": "16"}
    if processes > 1:
        base.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES=str(processes))
    procs = [subprocess.Popen(train_command(recipe_path, *flags), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True,
                              env={**base, **({"JAX_PROCESS_ID": str(i)} if processes > 1 else {})})
             for i in range(processes)]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    for p, err in zip(procs, errors):
        assert p.returncode == 0, f"a trainer process exited {p.returncode}: {err[-3000:]}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "tiny", num_samples=8)


@pytest.fixture(scope="module", params=["finetune", "dmd2"])
def runs(request, tmp_path_factory, data):
    """The same recipe on 1 process x 8 devices and on 2 processes x 4 devices."""
    method, root = request.param, tmp_path_factory.mktemp(request.param)
    one = write_recipe(root / "one.yaml", _recipe(method, data, root / "one", **EIGHT))
    two = write_recipe(root / "two.yaml", _recipe(method, data, root / "two", **EIGHT))
    _train(one, 1, 8)
    _train(two, 2, 4)
    return method, root


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        scale = max(float(np.max(np.abs(a[name]))), 1e-6)
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_two_processes_give_the_one_process_run(runs):
    method, root = runs
    one, two = metrics_by_step(root / "one"), metrics_by_step(root / "two")
    assert sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        for key in KEYS[method]:
            np.testing.assert_allclose(two[step][key], one[step][key], rtol=1e-4, err_msg=f"{key} at step {step}")
    _close(checkpoint_arrays(root / "one", STEPS), checkpoint_arrays(root / "two", STEPS))
    assert (root / "two" / "student" / "fvjax_manifest.json").is_file()   # process 0 exported, all joined


@pytest.mark.parametrize("written_by,resumed_by", [((2, 4, EIGHT), (1, 4, FOUR)), ((1, 8, EIGHT), (2, 4, EIGHT))])
def test_resume_on_another_process_and_device_count(runs, data, tmp_path, written_by, resumed_by):
    method, root = runs
    source = root / ("two" if written_by[0] == 2 else "one")
    out = tmp_path / "resumed"
    recipe = write_recipe(tmp_path / "resumed.yaml", _recipe(method, data, out, **resumed_by[2]))
    _train(recipe, resumed_by[0], resumed_by[1], "--resume-from-checkpoint", str(source / "checkpoints" / str(HALF)))
    straight, resumed = metrics_by_step(root / "one"), metrics_by_step(out)
    assert sorted(resumed) == list(range(HALF + 1, STEPS + 1))
    for step in resumed:
        for key in KEYS[method]:
            np.testing.assert_allclose(resumed[step][key], straight[step][key], rtol=1e-4,
                                       err_msg=f"{key} at step {step}")
    _close(checkpoint_arrays(root / "one", STEPS), checkpoint_arrays(out, STEPS))

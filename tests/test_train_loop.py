"""The loop's reactions: non-finite loss, SIGTERM (preemption), init_weights_from_safetensors, and the
full-size finetune dry-run plan."""
from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest

from training_utils import (REPO, checkpoint_arrays, finetune_recipe, make_data, metrics_by_step, train_command,
                            train_in_process, write_recipe)
from fvjax.training.checkpoint import Checkpointer, checkpoint_root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "tiny", num_samples=4)


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data, capsys):
    out = tmp_path / "out"
    # An absurd learning rate without clipping: the weights blow up within a few steps.
    recipe = write_recipe(tmp_path / "r.yaml", finetune_recipe(
        data, out, max_train_steps=50, learning_rate=1.0e8, max_grad_norm=0.0, lr_warmup_steps=0,
        lr_scheduler="constant", training_state_checkpointing_steps=1))
    with pytest.raises(SystemExit) as stop:
        train_in_process(recipe)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fvjax: error: ") and "training stopped at step" in err and "student/loss is" in err
    bad_step = int(err.split("training stopped at step ")[1].split(":")[0])
    steps = Checkpointer(checkpoint_root(str(out)), read_only=True).all_steps()
    assert steps and max(steps) == bad_step - 1  # the diverged step was not saved
    assert f"last good checkpoint is {checkpoint_root(str(out))}/{bad_step - 1}" in err
    rows = metrics_by_step(out)
    assert all(np.isfinite(rows[s]["student/loss"]) for s in range(1, bad_step))


def test_sigterm_saves_a_checkpoint_and_exits_0_then_resume_continues(tmp_path, data):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", finetune_recipe(data, out, max_train_steps=100_000))
    proc = subprocess.Popen(train_command(recipe), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    assert "preempted; saved checkpoint" in proc.stderr.read()
    proc.stderr.close()
    last = max(metrics_by_step(out))
    assert Checkpointer(checkpoint_root(str(out)), read_only=True).all_steps() == [last]

    resumed = write_recipe(tmp_path / "r2.yaml", finetune_recipe(data, out, max_train_steps=last + 2))
    assert train_in_process(resumed, "--resume-from-checkpoint", "latest") == 0
    assert max(metrics_by_step(out)) == last + 2
    assert Checkpointer(checkpoint_root(str(out)), read_only=True).latest_step() == last + 2


def test_init_weights_from_safetensors_replaces_the_initial_weights(tmp_path, data):
    import torch
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    from fvjax.families.wan.config import PRESETS

    cfg = {k: v for k, v in PRESETS["tiny"].to_diffusers_config().items() if k != "_class_name"}
    torch.manual_seed(0)
    reference = WanTransformer3DModel(**cfg)
    weights = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))

    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", finetune_recipe(
        data, out, max_train_steps=1, learning_rate=1e-12, lr_warmup_steps=0, lr_scheduler="constant",
        init_weights_from_safetensors=str(weights)))
    assert train_in_process(recipe) == 0
    params = checkpoint_arrays(out, 1)
    # lr 1e-12: one update leaves the initial weights (those of the file) unchanged to ~1e-12.
    kernel = params["['student']['params']['proj_out']['kernel']"]
    np.testing.assert_allclose(kernel, reference.proj_out.weight.detach().numpy().T, atol=1e-9)
    table = params["['student']['params']['blocks']['scale_shift_table']"]
    np.testing.assert_allclose(table[1], reference.blocks[1].scale_shift_table.detach().numpy(), atol=1e-9)


def test_full_size_finetune_dry_run_prints_counts_and_per_device_bytes(capsys):
    assert train_in_process(REPO / "configs/finetune/wan2.1_t2v_1.3B.yaml", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "student  trainable" in out and "1.419 B params (30 layers, dim 1536)" in out
    # 1,418,996,800 fp32 params over 8 fsdp shards + two fp32 AdamW moments.
    assert "per device: params 679.11 MiB + AdamW m,v 1.33 GiB = 1.99 GiB" in out
    assert "mesh        replica=1 x fsdp=8 x sp=1 x tp=1" in out


def test_nonfinite_loss_between_fetches_is_caught_before_the_next_checkpoint(tmp_path, data, capsys):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", finetune_recipe(
        data, out, max_train_steps=50, learning_rate=1.0e8, max_grad_norm=0.0, lr_warmup_steps=0,
        lr_scheduler="constant", training_state_checkpointing_steps=2, log_steps=3))
    with pytest.raises(SystemExit) as stop:
        train_in_process(recipe)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    bad_step = int(err.split("training stopped at step ")[1].split(":")[0])
    rows = metrics_by_step(out)
    assert sorted(rows) == list(range(1, bad_step))   # every step before the first bad one, nothing after
    steps = Checkpointer(checkpoint_root(str(out)), read_only=True).all_steps()
    assert all(s < bad_step for s in steps)
    kept = f"last good checkpoint is {checkpoint_root(str(out))}/{max(steps)}" if steps else "no checkpoint was saved"
    assert kept in err

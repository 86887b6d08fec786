"""DMD2 end to end: a distillation from a known teacher learns; the trainer on tiny Wan models (student,
larger teacher, critic) steps the student only on update steps and the critic every step; resume after
SIGKILL is bit-exact; 8 simulated devices (fsdp + sp) give the 1-device run."""
from __future__ import annotations

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from fvjax.families.wan.config import PRESETS
from fvjax.families.wan.transformer import WanTransformer, params_of
from fvjax.methods.dmd2.update import NEGATIVE_PROMPT, make_update
from fvjax.methods.dmd2.config import SIMULATE, DMD2Config
from fvjax.schedulers.few_step import few_step_sample
from fvjax.methods.dmd2.schedule import NoiseLevels, denoising_steps
from fvjax.training.optim import OptimizerConfig, build_optimizer
from fvjax.training.roles import RoleModel, RoleState
from test_dmd2_units import ClosedFormRole
from training_utils import (REPO, assert_same_arrays, checkpoint_arrays, kill_after_checkpoint, make_data,
                            metrics_by_step, role_arrays, same_arrays, train_command, train_in_process,
                            write_recipe)

# ----------------------------------------------------- a distillation whose teacher is a known function

MU, STD, SHIFT = 0.5, 0.5, 3.0
LEVELS = NoiseLevels(SHIFT)


def gaussian_teacher_velocity(params, x_t, t, text):
    """The exact flow-matching velocity for data x0 ~ N(mu, std^2) per element: x0_hat = E[x0 | x_t] =
    mu + a s2 / (a^2 s2 + sigma^2) (x_t - a mu) with a = 1 - sigma; v = (x_t - x0_hat) / sigma.
    Its many-step samples are N(mu, std^2) up to the sampler's discretisation."""
    sigma = LEVELS.sigma(t).reshape(-1, 1, 1, 1, 1)
    a = 1 - sigma
    x0 = params["mu"] + a * params["s2"] / (a * a * params["s2"] + sigma ** 2) * (x_t - a * params["mu"])
    return (x_t - x0) / sigma


def _wan_role(name: str, lr: float):
    config = PRESETS["tiny"]
    model = WanTransformer(config, rngs=nnx.Rngs(params=jax.random.key(0)))
    graphdef, _ = nnx.split(model)
    opt = OptimizerConfig(learning_rate=lr, betas=(0.0, 0.999), max_grad_norm=1.0)
    tx = build_optimizer(opt)
    params = params_of(model)
    return RoleModel(name, config, graphdef, True, opt, tx), RoleState(params, tx.init(params), None,
                                                                       jnp.zeros((), jnp.int32))


def _gaussian_w2(a: np.ndarray, b: np.ndarray) -> float:
    """The 2-Wasserstein distance between the Gaussian fits of two pooled sample sets."""
    return float(np.hypot(a.mean() - b.mean(), a.std() - b.std()))


def test_student_learns_the_few_step_version_of_a_known_teacher():
    student, student_state = _wan_role("student", 1e-3)
    critic, critic_state = _wan_role("critic", 1e-3)
    teacher = ClosedFormRole("teacher", None, None, False, velocity=gaussian_teacher_velocity)
    cfg = DMD2Config(rollout_mode=SIMULATE, dmd_denoising_steps=(1000, 750, 500), generator_update_interval=2,
                     real_score_guidance_scale=3.5, flow_shift=SHIFT, min_timestep_ratio=0.02, max_timestep_ratio=0.98)
    batch_size, sample = 4, (16, 1, 4, 4)
    text = jnp.asarray(np.random.default_rng(0).standard_normal((batch_size, 8, 32)), jnp.float32)
    batch = {"latents": jnp.zeros((1, batch_size) + sample), "text_embeds": text[None],
             "text_mask": jnp.ones((1, batch_size, 8), jnp.int32)}
    frozen = {"teacher": {"mu": jnp.float32(MU), "s2": jnp.float32(STD ** 2)},
              NEGATIVE_PROMPT: {"embeds": jnp.zeros((8, 32)), "mask": jnp.zeros((8,), jnp.int32)}}
    update = jax.jit(make_update(cfg, {"student": student, "critic": critic, "teacher": teacher}, jnp.float32),
                     donate_argnums=(0,))
    repeats = 16   # 64 samples of 256 elements each

    @jax.jit
    def student_samples(params, key):   # the DMD few-step sampler, 3 steps
        noise = jax.random.normal(key, (repeats * batch_size,) + sample)
        texts = jnp.tile(text, (repeats, 1, 1))
        x0_fn = lambda p, x, t: LEVELS.x0_from_velocity(x, student.apply(p, x, jnp.full((x.shape[0],), t), texts), t)
        return few_step_sample(x0_fn, params, noise, denoising_steps(cfg), LEVELS, jax.random.fold_in(key, 1))

    def teacher_samples(key, num_steps=100):   # a many-step Euler ODE over the shifted sigmas
        x = jax.random.normal(key, (repeats * batch_size,) + sample)
        sigmas = np.append(LEVELS.table.sigmas[np.linspace(0, 999, num_steps).astype(int)], 0.0)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            x = x + (s_next - s) * gaussian_teacher_velocity(frozen["teacher"], x, jnp.full((x.shape[0],), s * 1000),
                                                            None)
        return np.asarray(x)

    reference = teacher_samples(jax.random.key(7))
    assert abs(reference.mean() - MU) < 0.03 and abs(reference.std() - STD) < 0.05   # the teacher is right
    eval_key = jax.random.key(11)
    before = _gaussian_w2(np.asarray(student_samples(student_state.params, eval_key)), reference)
    states = {"student": student_state, "critic": critic_state}
    for step in range(1, 201):
        states, metrics = update(states, frozen, batch, jax.random.fold_in(jax.random.key(0), step))
    after = _gaussian_w2(np.asarray(student_samples(states["student"].params, eval_key)), reference)
    # Measured: W2 0.90 -> 0.24 after 200 steps (100 student updates); the random student's 3-step samples
    # have mean 0.06 / std 1.25, the teacher's 0.50 / 0.48, the trained student's ~0.46 / ~0.70.
    assert after < 0.4 * before, (before, after)


# ------------------------------------------------------------------------------- the trainer, tiny Wan

STEPS = 8
HALF = 4
INTERVAL = 2


def dmd2_recipe(data_path, output_dir, **training) -> dict:
    """configs/examples/tiny_dmd2.yaml with test-sized settings: a checkpoint after every step; no validation
    videos (the example's model_path, outputs/tiny_pipeline, is made by the demo, not by a checkout)."""
    recipe = yaml.safe_load((REPO / "configs/examples/tiny_dmd2.yaml").read_text())
    recipe["training"].update(data_path=str(data_path), output_dir=str(output_dir), max_train_steps=STEPS,
                              training_state_checkpointing_steps=1, checkpoints_total_limit=0, train_batch_size=4,
                              model_path="", log_validation=False)
    recipe["training"].update(training)
    recipe["method_config"]["generator_update_interval"] = INTERVAL
    return recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "tiny", num_samples=8)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("straight")
    assert train_in_process(write_recipe(root / "recipe.yaml", dmd2_recipe(data, root / "out"))) == 0
    return root / "out"


def test_student_changes_only_on_update_steps_critic_every_step(straight_run):
    rows = metrics_by_step(straight_run)
    previous = checkpoint_arrays(straight_run, 1)
    assert not any("teacher" in k for k in previous)   # the frozen teacher is never checkpointed
    assert role_arrays(previous, "student", "ema")      # the recipe's ema_decay gives the student an EMA
    for step in range(2, STEPS + 1):
        current = checkpoint_arrays(straight_run, step)
        update = step % INTERVAL == 0
        assert rows[step]["student/update"] == float(update)
        # Params, optimizer state (moments, counts), EMA and update count: all untouched off update steps.
        assert same_arrays(role_arrays(current, "student"), role_arrays(previous, "student")) == (not update), step
        assert not same_arrays(role_arrays(current, "student", "params"), role_arrays(previous, "student", "params")) \
            == update, step
        assert not same_arrays(role_arrays(current, "critic", "params"), role_arrays(previous, "critic", "params")), step
        assert int(current["['critic']['step']"]) == step and int(current["['student']['step']"]) == step // INTERVAL
        assert np.isfinite(rows[step]["critic/flow_loss"]) and (rows[step]["student/dmd_loss"] > 0) == update
        previous = current


def test_resume_after_sigkill_is_bit_exact(tmp_path, data, straight_run):
    killed = tmp_path / "killed"
    long = write_recipe(tmp_path / "long.yaml", dmd2_recipe(data, killed, max_train_steps=100 * STEPS))
    assert kill_after_checkpoint(long, killed, HALF) == -9

    resumed = tmp_path / "resumed"
    recipe = write_recipe(tmp_path / "recipe.yaml", dmd2_recipe(data, resumed))
    assert train_in_process(recipe, "--resume-from-checkpoint", str(killed / "checkpoints" / str(HALF))) == 0

    expected, got = checkpoint_arrays(straight_run, STEPS), checkpoint_arrays(resumed, STEPS)
    assert expected.keys() == got.keys()
    assert role_arrays(got, "student", "opt_state") and role_arrays(got, "critic", "opt_state")
    assert_same_arrays(expected, got)
    straight, before, after = metrics_by_step(straight_run), metrics_by_step(killed), metrics_by_step(resumed)
    assert sorted(after) == list(range(HALF + 1, STEPS + 1))
    for step in range(1, STEPS + 1):
        row = before[step] if step <= HALF else after[step]
        for key in ("student/dmd_loss", "critic/flow_loss"):
            assert row[key] == straight[step][key], (step, key)


# XLA:CPU runs the 8 simulated devices on one thread pool of max(cores, devices) threads (PJRT_NPROC
# overrides the core count). An in-process collective holds a pool thread while it waits for the other
# devices, and the CPU thunk executor orders collectives only by when they start: while a loop (a layer
# scan, lax.cond's student phase, ...) that contains collectives runs asynchronously, the device may
# already start the next collective on another thread. One device can so hold two threads; under load
# the 8 threads filled with waiting collectives (3 in an all-gather inside a layer scan, 5 in a
# collective-permute after it) while a device still owed the loop's all-gather, and the rendezvous
# aborted the process after 40 s. Real accelerators wait on device streams, not on host threads; the
# simulation needs spare threads: 4 per device (16 in all also passed on one loaded core). The pool
# size is read when the process creates its CPU client, hence a fresh process.
EIGHT_DEVICE_POOL_THREADS = 32


def test_eight_devices_fsdp_and_sp_match_one_device(tmp_path, data, straight_run):
    # 8 devices: 2 replicas x 2 fsdp x 2 sp; 4 data-parallel groups of 1 sample = the straight run's batch of 4.
    eight = tmp_path / "eight"
    recipe = dmd2_recipe(data, eight, max_train_steps=HALF, training_state_checkpointing_steps=HALF, num_gpus=8,
                         sp_size=2, hsdp_replicate_dim=2, hsdp_shard_dim=4, train_batch_size=1)
    env = {**os.environ, "PJRT_NPROC": str(EIGHT_DEVICE_POOL_THREADS)}
    res = subprocess.run(train_command(write_recipe(tmp_path / "eight.yaml", recipe)), cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    assert res.returncode == 0, f"trainer exited {res.returncode}: {res.stderr[-3000:]}"
    m1, m8 = metrics_by_step(straight_run), metrics_by_step(eight)
    for step in range(1, HALF + 1):
        for key in ("student/dmd_loss", "critic/flow_loss", "critic/grad_norm"):
            np.testing.assert_allclose(m8[step][key], m1[step][key], rtol=1e-4, err_msg=f"{key} at step {step}")
    p1, p8 = checkpoint_arrays(straight_run, HALF), checkpoint_arrays(eight, HALF)
    assert p1.keys() == p8.keys()
    for name in p1:
        scale = max(float(np.max(np.abs(p1[name]))), 1e-6)
        np.testing.assert_allclose(p8[name], p1[name], rtol=1e-4, atol=1e-5 * scale, err_msg=name)

"""DMD2's pieces against independent references: the CFG forms, the score timestep (shift, clamp), the
nearest-timestep noise levels and warp_denoising_step against Diffusers' FlowMatchEulerDiscreteScheduler,
the rollouts (n - 1 no-grad forwards, gradient through the exit step only), and the DMD gradient of the
whole update on closed-form models whose x0 predictions are known exactly."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from diffusers import FlowMatchEulerDiscreteScheduler

from fvjax.methods.common import purpose_key
from fvjax.methods.dmd2.update import NEGATIVE_PROMPT, make_losses, make_update, student_updates_at
from fvjax.methods.dmd2.config import CFG_FASTVIDEO, CFG_STANDARD, DATA_LATENT, SIMULATE, DMD2Config
from fvjax.methods.dmd2.rollout import data_latent_rollout, simulate_rollout, simulate_rollout_no_grad
from fvjax.methods.dmd2.schedule import (NoiseLevels, denoising_steps, guided_x0, score_timestep,
                                         shift_timestep)
from fvjax.schedulers.few_step import few_step_sample
from fvjax.training.optim import OptimizerConfig
from fvjax.training.roles import RoleModel, RoleState


def scheduler_table(shift: float) -> tuple[np.ndarray, np.ndarray]:
    s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    return s.timesteps.numpy().astype(np.float64), s.sigmas.numpy()[:1000].astype(np.float64)


# ------------------------------------------------------------------------------------------- CFG forms

def test_cfg_forms():
    cond, uncond = jnp.array([2.0, -1.0]), jnp.array([0.5, 1.0])
    np.testing.assert_allclose(guided_x0(cond, uncond, 3.5, CFG_FASTVIDEO), [2 + 3.5 * 1.5, -1 + 3.5 * -2.0])
    np.testing.assert_allclose(guided_x0(cond, uncond, 4.5, CFG_STANDARD), [0.5 + 4.5 * 1.5, 1 + 4.5 * -2.0])
    # FastVideo's w equals standard guidance w + 1 (its docs: 3.5 is standard 4.5).
    np.testing.assert_allclose(guided_x0(cond, uncond, 3.5, CFG_FASTVIDEO), guided_x0(cond, uncond, 4.5, CFG_STANDARD),
                               rtol=1e-6)
    # Scale 0: fastvideo keeps the conditional prediction, standard the unconditional one.
    np.testing.assert_array_equal(guided_x0(cond, uncond, 0.0, CFG_FASTVIDEO), cond)
    np.testing.assert_array_equal(guided_x0(cond, uncond, 0.0, CFG_STANDARD), uncond)
    assert DMD2Config().real_score_guidance_form == CFG_FASTVIDEO   # the documented default


# ----------------------------------------------------------------------------- timesteps, noise levels

@pytest.mark.parametrize("shift", [1.0, 3.0, 8.0])
def test_shift_timestep_is_the_scheduler_table(shift):
    timesteps, _ = scheduler_table(shift)
    t = np.arange(1, 1001, dtype=np.float32)             # table index 1000 - t has unshifted u = t / 1000
    np.testing.assert_allclose(np.asarray(shift_timestep(jnp.asarray(t), shift)), timesteps[1000 - t.astype(int)],
                               rtol=2e-6, atol=1e-4)


def test_score_timestep_shift_and_clamp():
    cfg = DMD2Config(flow_shift=8.0, min_timestep_ratio=0.02, max_timestep_ratio=0.98)
    keys = jax.random.split(jax.random.key(0), 20000)
    t = np.asarray(jax.vmap(lambda k: score_timestep(k, cfg))(keys), np.float64)
    assert t.min() == 20.0 and t.max() == 980.0
    # Unclamped values are shifted integers: invert the shift and find integers.
    inner = t[(t > 20) & (t < 980)]
    u = inner / (8.0 * 1000 - 7.0 * inner)              # inverse of t = 1000 * 8u / (1 + 7u)
    np.testing.assert_allclose(u * 1000, np.round(u * 1000), atol=2e-3)
    # Analytic clamp masses for t_raw ~ U{0..999}: shift(t_raw) <= 20 for t_raw <= 2 (3/1000); >= 980 for
    # t_raw >= 860 (140/1000). With 20000 draws the standard errors are 0.0004 and 0.0025.
    assert abs(np.mean(t == 20.0) - 0.003) < 0.0025
    assert abs(np.mean(t == 980.0) - 0.140) < 0.012
    # Without shift or clamp: uniform integers over 0..999.
    plain = np.asarray(jax.vmap(lambda k: score_timestep(
        k, DMD2Config(flow_shift=1.0, min_timestep_ratio=0.0, max_timestep_ratio=1.0)))(keys))
    assert plain.min() == 0 and plain.max() == 999 and np.all(plain == np.round(plain))
    assert abs(plain.mean() - 499.5) < 8


def test_noise_level_is_the_nearest_scheduler_entry():
    timesteps, sigmas = scheduler_table(8.0)
    levels = NoiseLevels(8.0)
    t = np.array([1000, 999.9, 980, 757, 522.3, 125, 20, 3, 0], np.float32)
    expected = sigmas[np.argmin(np.abs(timesteps[None] - t[:, None]), axis=1)]
    np.testing.assert_allclose(np.asarray(levels.sigma(jnp.asarray(t))), expected, rtol=1e-6)
    # The shift only changes the grid resolution: sigma ~ t / 1000 for integer t.
    np.testing.assert_allclose(np.asarray(levels.sigma(jnp.asarray(t[:-1]))), t[:-1] / 1000, atol=0.008)
    x0, eps = jnp.full((2, 3), 2.0), jnp.full((2, 3), -1.0)
    s = float(levels.sigma(757.0))
    np.testing.assert_allclose(levels.add_noise(x0, eps, 757.0), (1 - s) * 2.0 - s, rtol=1e-6)
    np.testing.assert_allclose(levels.x0_from_velocity(levels.add_noise(x0, eps, 757.0), eps - x0, 757.0), x0,
                               rtol=1e-5)


def test_warp_denoising_step():
    cfg = DMD2Config(dmd_denoising_steps=(1000, 757, 522), flow_shift=8.0)
    np.testing.assert_array_equal(denoising_steps(cfg), [1000, 757, 522])
    warped = denoising_steps(dataclasses.replace(cfg, warp_denoising_step=True))
    timesteps, _ = scheduler_table(8.0)
    reference = np.concatenate([timesteps, [0.0]])[1000 - np.array([1000, 757, 522])]   # FastVideo's indexing
    np.testing.assert_allclose(warped, reference, rtol=1e-6)
    u = np.array([1.0, 0.757, 0.522])
    np.testing.assert_allclose(warped, 1000 * 8 * u / (1 + 7 * u), rtol=1e-5)   # spec's closed form


def test_student_update_steps():
    steps = jnp.arange(1, 11)
    assert list(np.flatnonzero(np.asarray(student_updates_at(steps, 5))) + 1) == [5, 10]
    assert bool(student_updates_at(jnp.asarray(7), 0)) and bool(student_updates_at(jnp.asarray(7), -1))


# -------------------------------------------------------------------------------------------- rollouts

STEPS = np.array([1000.0, 757.0, 522.0, 300.0], np.float32)
SHAPE = (2, 4, 3)


def _counting_x0_fn():
    """x0 = a * x + b (a toy student); records the timestep of every forward that runs (a debug callback
    fires once per executed call, inside a scan once per iteration)."""
    calls = []

    def x0_fn(params, x, t):
        jax.debug.callback(lambda t: calls.append(float(t)), t, ordered=True)
        return params["a"] * x + params["b"]
    return x0_fn, calls


def _run(fn, *args):
    out = jax.jit(fn)(*args)
    jax.effects_barrier()
    return out


def test_simulate_rollout_runs_n_minus_1_no_grad_forwards_and_differentiates_the_exit_only():
    levels = NoiseLevels(8.0)
    params = {"a": jnp.float32(0.7), "b": jnp.float32(0.3)}
    x0_fn, calls = _counting_x0_fn()
    rollout = jax.jit(lambda p, k: simulate_rollout(x0_fn, p, SHAPE, STEPS, levels, k))
    no_grad = jax.jit(lambda p, k: simulate_rollout_no_grad(x0_fn, p, SHAPE, STEPS, levels, k))
    grad = jax.jit(jax.grad(lambda p, k: jnp.sum(simulate_rollout(x0_fn, p, SHAPE, STEPS, levels, k).x0)))
    seen_exits = set()
    for seed in range(40):
        if seen_exits == {0, 1, 2, 3} and seed >= 8:
            break
        key = jax.random.key(seed)
        calls.clear()
        out = rollout(params, key)
        jax.effects_barrier()
        k = int(out.exit_index)
        seen_exits.add(k)
        # n - 1 chain forwards (the whole chain whatever k is), then the exit forward at s_k.
        assert calls == list(STEPS[:-1]) + [STEPS[k]]
        grads = grad(params, key)
        # Through the exit step only: d/da sum(a * input + b) = sum(input) (the input treated as constant).
        np.testing.assert_allclose(grads["a"], jnp.sum(out.exit_input), rtol=1e-5)
        np.testing.assert_allclose(grads["b"], float(np.prod(SHAPE)), rtol=1e-6)
        if k == 0:
            np.testing.assert_array_equal(out.exit_input, jax.random.normal(purpose_key(key, "initial_noise"),
                                                                             SHAPE, jnp.float32))
        # The no-grad variant (one scan over all n steps) gives the same rollout.
        calls.clear()
        same = no_grad(params, key)
        jax.effects_barrier()
        assert calls == list(STEPS)   # n forwards, one of them the exit
        assert int(same.exit_index) == k
        np.testing.assert_allclose(same.x0, out.x0, rtol=1e-6)
        np.testing.assert_allclose(same.exit_input, out.exit_input, rtol=1e-6)
    assert seen_exits == {0, 1, 2, 3}


def test_simulate_rollout_renoises_with_fresh_noise():
    """With a constant student x0 = c, the exit input after k >= 1 re-noisings is (1 - s) c + s eps with
    s = sigma(s_k): its mean and std over many samples show the re-noising level and fresh N(0, 1) noise."""
    levels = NoiseLevels(8.0)
    c = 2.0

    def x0_fn(params, x, t):
        return jnp.full_like(x, c)
    shape = (4000,)
    for seed in range(6):
        out = jax.jit(lambda key: simulate_rollout(x0_fn, {}, shape, STEPS, levels, key))(jax.random.key(seed))
        k = int(out.exit_index)
        s = float(levels.sigma(STEPS[k]))
        mean, std = (0.0, 1.0) if k == 0 else ((1 - s) * c, s)
        assert abs(float(jnp.mean(out.exit_input)) - mean) < 0.06 and abs(float(jnp.std(out.exit_input)) - std) < 0.05


def test_data_latent_rollout_noises_the_latent_at_the_exit_step():
    levels = NoiseLevels(3.0)
    latents = jnp.full((4000,), 1.5)
    params = {"a": jnp.float32(0.5), "b": jnp.float32(0.0)}
    x0_fn, calls = _counting_x0_fn()
    out = _run(lambda p, k: data_latent_rollout(x0_fn, p, latents, STEPS, levels, k), params, jax.random.key(3))
    s = float(levels.sigma(STEPS[int(out.exit_index)]))
    assert len(calls) == 1
    assert abs(float(jnp.mean(out.exit_input)) - (1 - s) * 1.5) < 0.06 and abs(float(jnp.std(out.exit_input)) - s) < 0.05
    np.testing.assert_allclose(out.x0, 0.5 * out.exit_input, rtol=1e-6)


def test_few_step_sample_is_the_chain_then_the_last_prediction():
    levels = NoiseLevels(8.0)
    x0_fn, calls = _counting_x0_fn()
    params = {"a": jnp.float32(0.0), "b": jnp.float32(1.25)}   # x0 = 1.25 whatever the input
    out = _run(lambda p, k: few_step_sample(x0_fn, p, jnp.zeros(SHAPE), STEPS, levels, k), params,
               jax.random.key(0))
    assert calls == list(STEPS)
    np.testing.assert_allclose(out, 1.25)


# ------------------------------------------------------- the DMD gradient on closed-form models

@dataclasses.dataclass(frozen=True, eq=False)
class ClosedFormRole(RoleModel):
    """A role whose velocity is a closed-form function of its params (not a network)."""
    velocity: Callable | None = None

    def apply(self, params, hidden_states, timestep, encoder_hidden_states):
        return self.velocity(params, hidden_states, timestep, encoder_hidden_states)


TABLE_T, TABLE_SIGMA = (jnp.asarray(a, jnp.float32) for a in scheduler_table(3.0))


def _sigma(t):
    """Per-sample sigma by nearest lookup in Diffusers' table (an independent copy of the rule)."""
    idx = jnp.argmin(jnp.abs(TABLE_T[None] - t[:, None]), axis=1)
    return TABLE_SIGMA[idx].reshape(-1, 1, 1, 1, 1)


def _predicting(x0_of):
    """The velocity whose x0 = x_t - sigma v is exactly x0_of(params, text)."""
    return lambda params, x, t, text: (x - x0_of(params, text)) / _sigma(t)


SAMPLE = (2, 4, 2, 2, 2)   # B, C, T, H, W


def _roles(student_lr=1.0, critic_lr=0.1, ema_decay=0.0):
    def role(name, velocity, lr=None):
        if lr is None:
            return ClosedFormRole(name, None, None, False, velocity=velocity)
        return ClosedFormRole(name, None, None, True, OptimizerConfig(learning_rate=lr, ema_decay=ema_decay),
                              optax.sgd(lr), velocity=velocity)
    return {
        "student": role("student", _predicting(lambda p, text: p["p"]), student_lr),   # x0 = P
        "critic": role("critic", _predicting(lambda p, text: p["f"]), critic_lr),      # x0_fake = F
        # x0 = M + text[b, 0, 0] Q: the conditional and the negative prompt give different predictions.
        "teacher": role("teacher", _predicting(
            lambda p, text: p["m"] + text[:, 0, 0].reshape(-1, 1, 1, 1, 1) * p["q"])),
    }


def _state(params, ema=False):
    return RoleState(params=params, opt_state=optax.sgd(1.0).init(params), ema=jax.tree.map(jnp.copy, params) if ema else None,
                     step=jnp.zeros((), jnp.int32))


def _closed_form_setup(seed=0, accum=2, ema=False):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    states = {"student": _state({"p": normal(*SAMPLE)}, ema), "critic": _state({"f": normal(*SAMPLE)})}
    frozen = {"teacher": {"m": normal(*SAMPLE), "q": normal(*SAMPLE)},
              NEGATIVE_PROMPT: {"embeds": jnp.full((6, 3), 0.25), "mask": jnp.ones((6,), jnp.int32)}}
    cond = jnp.asarray(rng.uniform(0.5, 2.0, (accum, SAMPLE[0])), jnp.float32)
    batch = {"latents": normal(accum, *SAMPLE),
             "text_embeds": jnp.broadcast_to(cond[:, :, None, None], (accum, SAMPLE[0], 6, 3)),
             "text_mask": jnp.ones((accum, SAMPLE[0], 6), jnp.int32)}
    return states, frozen, batch, cond


def _analytic_grad(states, frozen, cond_values, cfg):
    """d L / d P for x0 = P, x0_fake = F, x0_c = M + c Q, x0_u = M + 0.25 Q, averaged over micro-batches."""
    p, f = states["student"].params["p"], states["critic"].params["f"]
    m, q = frozen["teacher"]["m"], frozen["teacher"]["q"]
    grads = []
    for c in cond_values:
        c = c.reshape(-1, 1, 1, 1, 1)
        real = guided_x0(m + c * q, m + 0.25 * q, cfg.real_score_guidance_scale, cfg.real_score_guidance_form)
        g = (f - real) / jnp.mean(jnp.abs(p - real))
        grads.append(g / p.size)                         # d/dx0 of 0.5 mean((x0 - sg(x0 - g))^2)
    return sum(grads) / len(grads)


@pytest.mark.parametrize("form, rollout", [(CFG_FASTVIDEO, SIMULATE), (CFG_STANDARD, DATA_LATENT)])
def test_dmd_gradient_is_the_normalised_fake_minus_real_direction(form, rollout):
    cfg = DMD2Config(rollout_mode=rollout, dmd_denoising_steps=(1000, 757, 522), generator_update_interval=1,
                     real_score_guidance_scale=3.5, real_score_guidance_form=form, flow_shift=3.0,
                     min_timestep_ratio=0.02, max_timestep_ratio=0.98)
    states, frozen, batch, cond = _closed_form_setup()
    expected = _analytic_grad(states, frozen, cond, cfg)

    losses = make_losses(cfg, _roles(), jnp.float32)
    one = jax.tree.map(lambda x: x[0], batch)
    grad = jax.grad(lambda p: losses.generator(p, one, jax.random.key(1), states["critic"].params, frozen)[0])(
        states["student"].params)["p"]
    np.testing.assert_allclose(grad, _analytic_grad(states, frozen, cond[:1], cfg), rtol=2e-4, atol=1e-9)

    # The whole jitted update (2 accumulated micro-batches, SGD lr 1): P moves by minus the mean gradient.
    update = jax.jit(make_update(cfg, _roles(), jnp.float32), donate_argnums=(0,))
    p_before = np.asarray(states["student"].params["p"])
    expected = np.asarray(expected)
    new, metrics = update(states, frozen, batch, jax.random.key(2))
    np.testing.assert_allclose(np.asarray(new["student"].params["p"]), p_before - expected, rtol=2e-4, atol=1e-8)
    np.testing.assert_allclose(metrics["student/grad_norm"], np.linalg.norm(expected), rtol=2e-4)
    assert float(metrics["student/update"]) == 1.0 and np.isfinite(float(metrics["critic/flow_loss"]))


def test_student_steps_only_on_update_steps_critic_every_step_teacher_never():
    cfg = DMD2Config(rollout_mode=SIMULATE, dmd_denoising_steps=(1000, 500), generator_update_interval=3,
                     flow_shift=3.0)
    states, frozen, batch, _ = _closed_form_setup(accum=1, ema=True)
    models = _roles(student_lr=0.5, critic_lr=0.5, ema_decay=0.9)
    update = jax.jit(make_update(cfg, models, jnp.float32), donate_argnums=(0,))   # as the loop jits it
    teacher = jax.tree.map(np.asarray, frozen)
    snap = lambda s: jax.tree.map(np.array, s)
    for step in range(1, 7):
        before = snap(states)
        states, metrics = update(states, frozen, batch, jax.random.fold_in(jax.random.key(0), step))
        after = snap(states)
        student_moved = not np.array_equal(after["student"].params["p"], before["student"].params["p"])
        assert student_moved == (step % 3 == 0), step
        assert float(metrics["student/update"]) == (step % 3 == 0)
        if step % 3:
            # Nothing of the student's state changes: params, optimizer state, EMA, update count.
            jax.tree.map(np.testing.assert_array_equal, after["student"], before["student"])
            assert float(metrics["student/dmd_loss"]) == 0.0 and float(metrics["student/grad_norm"]) == 0.0
        else:
            assert int(after["student"].step) == step // 3
            assert not np.array_equal(after["student"].ema["p"], before["student"].ema["p"])
        assert not np.array_equal(after["critic"].params["f"], before["critic"].params["f"]), step
        assert int(after["critic"].step) == step
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, frozen), teacher)   # never donated

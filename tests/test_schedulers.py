"""fvjax.schedulers against the installed Diffusers schedulers (the numerical oracle), all in float32.

Tolerance: sigma / timestep tables bit-equal; each step's output within 1e-6 of Diffusers' (max abs
difference over max |Diffusers' output|) when fed the same inputs; a whole guided sampling run (both chains
evolving independently) within 1e-5. Steps are not bit-equal: XLA:CPU fuses a*x - b*y into FMAs (torch does
not), and UniPC's float32 coefficients go through torch's log, which is not correctly rounded (ours is).
Measured on this CPU: per-step <= 8.3e-7 (UniPC, 50 steps), whole runs <= 2.2e-7.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from fvjax import schedulers
from fvjax.methods.dmd2 import rollout as dmd2_rollout

SHIFTS = (1.0, 3.0, 5.0, 8.0)
STEP_COUNTS = (1, 2, 10, 50)
SHAPE = (2, 4, 2, 4, 4)   # [B, C, F, H, W] latents, tiny


def diffusers_unipc(shift: float) -> UniPCMultistepScheduler:
    """The scheduler config Diffusers' Wan conversion writes (everything else default)."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                   num_train_timesteps=1000, flow_shift=shift)


def diffusers_euler(shift: float) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def ours(kind: str, steps: int, shift: float):
    return (schedulers.unipc_multistep if kind == "unipc" else schedulers.flow_match_euler)(steps, shift)


def theirs(kind: str, steps: int, shift: float):
    sched = (diffusers_unipc if kind == "unipc" else diffusers_euler)(shift)
    sched.set_timesteps(steps)
    return sched


def toy_velocity(x, t, context, gain=1.0):
    """A linear velocity field whose slope depends on the timestep: v = gain (0.5 + t / 1000) x + context."""
    slope = gain * (0.5 + t / 1000.0)
    return slope.reshape((-1,) + (1,) * (x.ndim - 1)) * x + context


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_unipc_tables_equal_diffusers(steps, shift):
    mine, ref = schedulers.unipc_multistep(steps, shift), theirs("unipc", steps, shift)
    assert ref.timesteps.dtype == torch.int64
    np.testing.assert_array_equal(np.asarray(mine.timesteps), ref.timesteps.numpy().astype(np.float32))
    np.testing.assert_array_equal(np.asarray(mine.sigmas), ref.sigmas.numpy())
    assert int(mine.timesteps[0]) == 999 and float(mine.sigmas[0]) == np.float32(1 - 1e-6)


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_euler_tables_equal_diffusers(steps, shift):
    mine, ref = schedulers.flow_match_euler(steps, shift), theirs("euler", steps, shift)
    np.testing.assert_array_equal(np.asarray(mine.timesteps), ref.timesteps.numpy())
    np.testing.assert_array_equal(np.asarray(mine.sigmas), ref.sigmas.numpy())


def test_euler_double_shift_quirk_is_kept():
    """sigma_min is shifted at construction and again in set_timesteps: last non-zero sigma ~0.009 at shift 3."""
    last = float(schedulers.flow_match_euler(10, 3.0).sigmas[-2])
    once = 3 * 0.001 / (1 + 2 * 0.001)
    twice = 3 * once / (1 + 2 * once)
    assert abs(last - twice) < 1e-7 and abs(last - 0.00892857) < 1e-6


@jax.jit
def _jitted_step(scheduler, state, index, velocity, sample):
    return scheduler.step(state, index, velocity, sample)


@pytest.mark.parametrize("kind,steps,shift", [("unipc", 1, 3.0), ("unipc", 2, 5.0), ("unipc", 10, 1.0),
                                              ("unipc", 10, 3.0), ("unipc", 50, 5.0), ("unipc", 50, 8.0),
                                              ("euler", 10, 3.0), ("euler", 50, 5.0)])
def test_every_step_equals_diffusers_step(kind, steps, shift):
    """Feed Diffusers' sample and the same velocity into both at every step (our solver state carried by
    us); each step's output, the last lower-order one included, matches scheduler.step to 1e-6."""
    ref, mine = theirs(kind, steps, shift), ours(kind, steps, shift)
    rng = np.random.default_rng(steps)
    x = torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32))
    context = torch.from_numpy(0.3 * rng.standard_normal(SHAPE).astype(np.float32))
    state = mine.init_state(jnp.asarray(x.numpy()))
    orders = []
    for i, t in enumerate(ref.timesteps):
        assert float(mine.timesteps[i]) == float(t)
        velocity = toy_velocity(x, t.float().expand(SHAPE[0]), context)
        expected = ref.step(velocity, t, x).prev_sample
        got, state = _jitted_step(mine, state, i, jnp.asarray(velocity.numpy()), jnp.asarray(x.numpy()))
        err = relative_error(got, expected.numpy())
        assert err <= 1e-6, f"step {i}/{steps}: relative error {err:.2e}"
        if kind == "unipc":
            orders.append(ref.this_order)
        x = expected
    if kind == "unipc":
        assert list(schedulers.step_orders(steps)) == orders
        assert orders[-1] == 1 and orders[0] == 1


def diffusers_guided_run(ref, x, context, negative, guidance_scale, gain):
    """WanPipeline's denoising loop with the toy model (float32 latents)."""
    for t in ref.timesteps:
        timestep = t.expand(x.shape[0]).float()
        cond = toy_velocity(x, timestep, context, gain)
        uncond = toy_velocity(x, timestep, negative, gain)
        x = ref.step(uncond + guidance_scale * (cond - uncond), t, x).prev_sample
    return x


@pytest.mark.parametrize("kind,steps,shift", [("unipc", 10, 3.0), ("unipc", 50, 5.0), ("euler", 10, 3.0),
                                              ("euler", 50, 8.0)])
def test_guided_sample_loop_equals_wan_pipeline_loop(kind, steps, shift):
    rng = np.random.default_rng(0)
    noise, context, negative = (rng.standard_normal(SHAPE).astype(np.float32) * s for s in (1.0, 0.3, 0.2))
    expected = diffusers_guided_run(theirs(kind, steps, shift), torch.from_numpy(noise),
                                    torch.from_numpy(context), torch.from_numpy(negative), 5.0, 0.8)
    got = schedulers.sample(_jax_toy_model, jnp.float32(0.8), jnp.asarray(noise), ours(kind, steps, shift),
                            jnp.asarray(context), jnp.asarray(negative), guidance_scale=5.0)
    assert got.dtype == jnp.float32 and got.shape == SHAPE
    err = relative_error(got, expected.numpy())
    assert err <= 1e-5, f"relative error {err:.2e}"


def _jax_toy_model(gain, x, timestep, context):
    return toy_velocity(x, timestep, context, gain)


def test_no_guidance_runs_the_model_once_per_step():
    """guidance_scale <= 1 (WanPipeline's rule) or no negative context: the conditional velocity alone."""
    calls = []

    def counting_model(params, x, timestep, context):
        calls.append(1)   # counted at trace time: once per model call in the scan body
        return toy_velocity(x, timestep, context, params)

    x = jnp.ones(SHAPE, jnp.float32)
    scheduler = schedulers.unipc_multistep(4, 3.0)
    plain = schedulers.sample(counting_model, 1.0, x, scheduler, x * 0.1, x * 0.5, guidance_scale=1.0)
    assert len(calls) == 1
    no_negative = schedulers.sample(counting_model, 1.0, x, scheduler, x * 0.1, None, guidance_scale=5.0)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(no_negative))


def test_few_step_sampler_shares_the_dmd2_rollouts_chain():
    from fvjax.schedulers import few_step

    assert schedulers.few_step_sample is few_step.few_step_sample
    assert dmd2_rollout.renoising_chain is few_step.renoising_chain and dmd2_rollout.chain_scan is few_step.chain_scan

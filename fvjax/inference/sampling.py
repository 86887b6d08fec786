"""Text-to-video latents as diffusers' WanPipeline makes them, on fvjax's DiT.

The denoising loop is WanPipeline's: per step the timestep of the scheduler for the whole batch, the
conditional velocity (and the unconditional one when guidance applies, combined as
uncond + g (cond - uncond)), one scheduler step, all in float32 between steps. The DMD sampler is the
few-step chain DMD2 students are trained for (conditional only, re-noised with fresh noise).

`model_fn(params, x, timestep [B], text) -> velocity` is any DiT call; the step is jitted once per shape
and driven from Python so a progress bar can follow long runs (a step of a full-size model takes seconds).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from fvjax.schedulers.few_step import NoiseLevels, few_step_sample
from fvjax.schedulers.flow_euler import flow_match_euler
from fvjax.schedulers.sampling import ode_step
from fvjax.schedulers.unipc import unipc_multistep

ModelFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]
SAMPLERS = ("unipc", "euler", "dmd")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """How to integrate from noise to latents.

    kind: unipc (WanPipeline's default scheduler) | euler (FlowMatchEulerDiscrete) | dmd (few-step chain).
    num_steps / guidance_scale: ODE samplers only (guidance applies when > 1 and a negative context is given).
    shift: the flow shift of the scheduler table (DMD: of the noise-level table).
    denoising_steps: the DMD list of timesteps, noisiest first (already warped if the student was trained
    with warp_denoising_step)."""
    kind: str = "unipc"
    num_steps: int = 50
    guidance_scale: float = 5.0
    shift: float = 3.0
    denoising_steps: tuple[float, ...] = ()

    @property
    def uses_guidance(self) -> bool:
        return self.kind != "dmd" and self.guidance_scale > 1.0

    @property
    def step_count(self) -> int:
        return len(self.denoising_steps) if self.kind == "dmd" else self.num_steps


def latent_shape(num_frames: int, height: int, width: int, channels: int, temporal: int = 4,
                 spatial: int = 8) -> tuple[int, int, int, int]:
    """[C, F_latent, H/8, W/8] for a video of num_frames = 1 + 4k frames (WanPipeline.prepare_latents)."""
    return (channels, (num_frames - 1) // temporal + 1, height // spatial, width // spatial)


def initial_noise(seed: int, batch: int, shape: Sequence[int]) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (batch, *shape), jnp.float32)


def _scheduler(spec: SamplerSpec):
    make = {"unipc": unipc_multistep, "euler": flow_match_euler}[spec.kind]
    return make(spec.num_steps, spec.shift)


# The loop of `fvjax.schedulers.sample`, one jitted step at a time so a progress bar can follow it.
_ode_step = jax.jit(ode_step, static_argnames=("model_fn", "guidance_scale"))


@functools.partial(jax.jit, static_argnames=("model_fn", "shift"))
def _dmd_sample(model_fn: ModelFn, params, noise, steps, context, key, shift: float):
    levels = NoiseLevels(shift)

    def x0_fn(p, x, t):
        velocity = model_fn(p, x, jnp.broadcast_to(t, (x.shape[0],)), context)
        return levels.x0_from_velocity(x, velocity, t)

    return few_step_sample(x0_fn, params, noise, steps, levels, key)


def denoise(model_fn: ModelFn, params, noise: jax.Array, context, spec: SamplerSpec, *,
            negative_context=None, key: jax.Array | None = None, progress: bool = False) -> jax.Array:
    """Final latents (float32, the noise's shape) from `noise` [B, C, F, H, W] under `spec`.

    `key` feeds the DMD chain's fresh noise (default: key 0); the ODE samplers are deterministic."""
    noise = jnp.asarray(noise, jnp.float32)
    if spec.kind == "dmd":
        key = jax.random.key(0) if key is None else key
        return _dmd_sample(model_fn, params, noise, jnp.asarray(spec.denoising_steps, jnp.float32), context, key,
                           float(spec.shift))
    scheduler = _scheduler(spec)
    guidance = float(spec.guidance_scale) if spec.uses_guidance and negative_context is not None else 1.0
    negative = negative_context if guidance > 1.0 else None
    x, state = noise, scheduler.init_state(noise)
    steps = range(scheduler.num_steps)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc=f"{spec.kind} sampling", unit="step", dynamic_ncols=True)
    for index in steps:
        x, state = _ode_step(model_fn, params, scheduler, jnp.int32(index), x, state, context, negative, guidance)
    return x


"""Text-to-video latents as diffusers' WanPipeline makes them, on fvjax's DiT.

The denoising loop is WanPipeline's: per step the timestep of the scheduler for the whole batch, the
conditional velocity (and the unconditional one when guidance applies, combined as
uncond + g (cond - uncond)), one scheduler step, all in float32 between steps. The DMD sampler is the
few-step chain DMD2 students are trained for (conditional only, re-noised with fresh noise).

`model_fn(params, x, timestep [B], text) -> velocity` is any DiT call; the step is jitted once per shape
and driven from Python so a progress bar can follow long runs (a step of a full-size model takes seconds).
Compiled programs per shape: the ODE samplers two, a start (the initial noise drawn or the given one
taken, the solver state) and the step every step runs; the DMD chain one, its noise drawn inside. Between
steps x and the solver state stay replicated over the parameters' devices, so the first step's inputs are
laid out like every later step's and no second step program is compiled for them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from fvjax.keys import standard_normal
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
    """float32 [batch, *shape]: jax.random.normal of key(seed) (what `SeededNoise` draws inside a program)."""
    return standard_normal(jax.random.key(seed), (batch, *shape))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["seed"], meta_fields=["shape"])
@dataclasses.dataclass(frozen=True)
class SeededNoise:
    """`initial_noise(seed, shape[0], shape[1:])`, drawn inside the sampler's first program instead of by
    programs of its own; the DMD chain's re-noising key derives from the same seed."""
    seed: Any                  # an int32 scalar (a jit argument: one program for every seed)
    shape: tuple[int, ...]     # [B, C, F, H, W]

    @classmethod
    def of(cls, seed: int, batch: int, shape: Sequence[int]) -> "SeededNoise":
        return cls(np.int32(seed), (batch, *map(int, shape)))

    def draw(self) -> jax.Array:
        return standard_normal(jax.random.key(self.seed), self.shape)

    def renoise_key(self) -> jax.Array:
        """The DMD chain's key: apart from the initial noise's."""
        return jax.random.fold_in(jax.random.key(self.seed), 1)


def _initial_x(noise) -> jax.Array:
    return noise.draw() if isinstance(noise, SeededNoise) else noise.astype(jnp.float32)


def _scheduler(spec: SamplerSpec):
    make = {"unipc": unipc_multistep, "euler": flow_match_euler}[spec.kind]
    return make(spec.num_steps, spec.shift)


def _placement(params) -> jax.sharding.Sharding | None:
    """Where x and the solver state live between steps: replicated over the devices of the parameters
    (None: left to XLA, when the parameters are no jax.Arrays or are laid out by another kind of sharding)."""
    arrays = [leaf for leaf in jax.tree_util.tree_leaves(params) if isinstance(leaf, jax.Array)]
    if not arrays:
        return None
    sharding = arrays[0].sharding
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    if len(sharding.device_set) == 1:
        return SingleDeviceSharding(next(iter(sharding.device_set)))
    return None


def _start(noise, scheduler):
    x = _initial_x(noise)
    return x, scheduler.init_state(x)


@functools.cache
def _ode_programs(placement: jax.sharding.Sharding | None):
    """The loop of `fvjax.schedulers.sample`, one jitted step at a time so a progress bar can follow it;
    the start and the step put their outputs at `placement`, so the step's inputs are always laid out alike."""
    placed = {} if placement is None else {"out_shardings": placement}
    return (jax.jit(_start, **placed),
            jax.jit(ode_step, static_argnames=("model_fn", "guidance_scale"), **placed))


@functools.partial(jax.jit, static_argnames=("model_fn", "shift"))
def _dmd_sample(model_fn: ModelFn, params, noise, steps, context, key, shift: float):
    levels = NoiseLevels(shift)
    if key is None:
        key = noise.renoise_key() if isinstance(noise, SeededNoise) else jax.random.key(0)

    def x0_fn(p, x, t):
        velocity = model_fn(p, x, jnp.broadcast_to(t, (x.shape[0],)), context)
        return levels.x0_from_velocity(x, velocity, t)

    return few_step_sample(x0_fn, params, _initial_x(noise), steps, levels, key)


def denoise(model_fn: ModelFn, params, noise, context, spec: SamplerSpec, *,
            negative_context=None, key: jax.Array | None = None, progress: bool = False) -> jax.Array:
    """Final latents (float32, the noise's shape) from `noise` under `spec`: an array [B, C, F, H, W] or a
    `SeededNoise`.

    `key` feeds the DMD chain's fresh noise (default: a SeededNoise's `renoise_key`, else key 0); the ODE
    samplers are deterministic."""
    if not isinstance(noise, (SeededNoise, jax.Array)):
        noise = np.asarray(noise, np.float32)   # a jit argument as it is (jnp.asarray would compile a copy)
    if spec.kind == "dmd":
        return _dmd_sample(model_fn, params, noise, np.asarray(spec.denoising_steps, np.float32), context, key,
                           float(spec.shift))
    scheduler = _scheduler(spec)
    guidance = float(spec.guidance_scale) if spec.uses_guidance and negative_context is not None else 1.0
    negative = negative_context if guidance > 1.0 else None
    start, step = _ode_programs(_placement(params))
    x, state = start(noise, scheduler)
    steps = range(scheduler.num_steps)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc=f"{spec.kind} sampling", unit="step", dynamic_ncols=True)
    for index in steps:
        x, state = step(model_fn, params, scheduler, np.int32(index), x, state, context, negative, guidance)
    return x


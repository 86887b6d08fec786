"""DMD2's timesteps and noise levels (spec §3), as FastVideo computes them.

- The noise scheduler is FlowMatchEulerDiscreteScheduler(shift=flow_shift); a timestep t (possibly not on
  its grid) is noised with the sigma of the table entry whose timestep is nearest to t, and x0 is
  recovered with that same sigma. An integer t therefore gets sigma ~ t / 1000 whatever the shift.
- The few-step list `dmd_denoising_steps`, optionally warped: s -> the shifted table's timestep at index
  1000 - s (a trailing 0 appended), i.e. 1000 * sh * u / (1 + (sh - 1) u) with u = s / 1000.
- The score timestep of the DMD and critic losses: t_raw ~ U{0..999}, shifted the same way, clamped to
  [floor(min_timestep_ratio * 1000), floor(max_timestep_ratio * 1000)]; one per step, shared by the batch.
- The teacher's classifier-free guidance in its two forms.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fvjax import flow_matching as fm
from fvjax.methods.dmd2_config import CFG_FASTVIDEO, CFG_STANDARD, DMD2Config


class NoiseLevels:
    """The shifted scheduler table with nearest-timestep lookup (traceable)."""

    def __init__(self, flow_shift: float, num_train_timesteps: int = fm.NUM_TRAIN_TIMESTEPS):
        self.table = fm.training_table(flow_shift, num_train_timesteps)
        self.num_train_timesteps = num_train_timesteps

    def sigma(self, t: jax.Array) -> jax.Array:
        """sigma of the table entry nearest to t (ties: the noisier entry, torch.argmin's first index)."""
        timesteps = jnp.asarray(self.table.timesteps)
        index = jnp.argmin(jnp.abs(timesteps - jnp.asarray(t, jnp.float32)[..., None]), axis=-1)
        return jnp.asarray(self.table.sigmas)[index]

    def add_noise(self, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
        """x_t = (1 - sigma) x0 + sigma eps with one timestep t (a scalar) for the whole batch."""
        sigma = self.sigma(t)
        return ((1 - sigma) * x0.astype(jnp.float32) + sigma * noise.astype(jnp.float32))

    def x0_from_velocity(self, x_t: jax.Array, velocity: jax.Array, t: jax.Array) -> jax.Array:
        """FastVideo's predict_x0: x0 = x_t - sigma(t) v, in float32 (FastVideo: float64, then bf16)."""
        return x_t.astype(jnp.float32) - self.sigma(t) * velocity.astype(jnp.float32)


def denoising_steps(cfg: DMD2Config) -> np.ndarray:
    """The few-step schedule (float32 [n], noisiest first), warped onto the shifted table if asked."""
    steps = np.asarray(cfg.dmd_denoising_steps, np.int64)
    if not cfg.warp_denoising_step:
        return steps.astype(np.float32)
    timesteps = np.concatenate([fm.training_table(cfg.flow_shift, cfg.num_train_timesteps).timesteps,
                                np.zeros(1, np.float32)])
    return timesteps[cfg.num_train_timesteps - steps].astype(np.float32)


def shift_timestep(t: jax.Array, shift: float, num_train_timesteps: int = fm.NUM_TRAIN_TIMESTEPS) -> jax.Array:
    """t -> N * sh * u / (1 + (sh - 1) u), u = t / N (the identity for sh = 1, which FastVideo skips)."""
    if shift == 1:
        return t
    u = t / num_train_timesteps
    return num_train_timesteps * shift * u / (1 + (shift - 1) * u)


def timestep_bounds(cfg: DMD2Config) -> tuple[int, int]:
    n = cfg.num_train_timesteps
    # Python's floor of the float product, as FastVideo's int(ratio * 1000).
    return int(math.floor(cfg.min_timestep_ratio * n)), int(math.floor(cfg.max_timestep_ratio * n))


def score_timestep(key: jax.Array, cfg: DMD2Config) -> jax.Array:
    """One score timestep (float32 scalar): uniform integer, shifted by flow_shift, clamped."""
    raw = jax.random.randint(key, (), 0, cfg.num_train_timesteps).astype(jnp.float32)
    low, high = timestep_bounds(cfg)
    return jnp.clip(shift_timestep(raw, cfg.flow_shift, cfg.num_train_timesteps), low, high)


def guided_x0(x0_cond: jax.Array, x0_uncond: jax.Array, scale: float, form: str) -> jax.Array:
    """The teacher's CFG x0. fastvideo (design branch / legacy, the seed's recipes): x_c + w (x_c - x_u),
    so w = 3.5 equals standard guidance 4.5; standard (FastVideo's current main): x_u + w (x_c - x_u)."""
    if form == CFG_FASTVIDEO:
        return x0_cond + scale * (x0_cond - x0_uncond)
    if form == CFG_STANDARD:
        return x0_uncond + scale * (x0_cond - x0_uncond)
    raise ValueError(f"unknown guidance form {form!r}")

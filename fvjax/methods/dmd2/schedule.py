"""DMD2's timesteps (spec §3), as FastVideo computes them.

- The noise levels are fvjax.schedulers.few_step.NoiseLevels (nearest-timestep sigmas of the shifted
  table; an integer t therefore gets sigma ~ t / 1000 whatever the shift).
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

from fvjax.schedulers import flow_matching as fm
from fvjax.methods.dmd2.config import CFG_FASTVIDEO, CFG_STANDARD, DMD2Config
from fvjax.schedulers.few_step import NoiseLevels, warp_timesteps  # noqa: F401  (NoiseLevels: DMD2's noise table)


def denoising_steps(cfg: DMD2Config) -> np.ndarray:
    """The few-step schedule (float32 [n], noisiest first), warped onto the shifted table if asked."""
    if not cfg.warp_denoising_step:
        return np.asarray(cfg.dmd_denoising_steps, np.float32)
    return warp_timesteps(cfg.dmd_denoising_steps, cfg.table_shift, cfg.num_train_timesteps)


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

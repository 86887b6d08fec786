"""Self-Forcing's noise levels and few-step schedule (spec self_forcing.md §3), as FastVideo's
SelfForcingFlowMatchScheduler(1000 steps, shift, sigma_min 0, extra_one_step) computes them.

- The grid: sigma_raw = linspace(1, 0, 1001) without its last point; sigma = sh sigma_raw / (1 + (sh - 1)
  sigma_raw); timesteps = 1000 sigma (t_max 1000, t_min ~ 4.98 for sh = 5). Every lookup (noising, x0 from
  the velocity, the ODE re-noising) takes the grid point nearest to t. The shift is pipeline.flow_shift.
- Warp: s -> the grid (with a trailing 0) at index 1000 - s: [1000, 750, 500, 250] at shift 5 ->
  [1000, 937.5, 833.33, 625], kept as floats (the time embedding sees them as they are).
- Per-frame timesteps t [B, F] for the causal student: sigma [B, 1, F, 1, 1] against [B, C, F, H, W].
- Exit indices: one per chunk, one shared by all chunks, or always the last step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.keys import purpose_key
from fvjax.schedulers.few_step import NoiseLevels
from fvjax.schedulers.flow_matching import NUM_TRAIN_TIMESTEPS, TrainingTable


def self_forcing_table(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> TrainingTable:
    """The scheduler's 1000-point grid (float32, index 0 = most noise)."""
    raw = np.linspace(1.0, 0.0, 1001)[:-1]
    sigmas = (shift * raw / (1 + (shift - 1) * raw)).astype(np.float32)
    return TrainingTable(sigmas=sigmas, timesteps=(sigmas * np.float32(num_train_timesteps)).astype(np.float32))


class SelfForcingLevels(NoiseLevels):
    """NoiseLevels (DMD2's nearest-grid noising and x0 recovery, scalar t) on Self-Forcing's grid, plus the
    per-frame forms the causal rollout uses."""

    def __init__(self, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS):
        self.table = self_forcing_table(shift, num_train_timesteps)
        self.num_train_timesteps = num_train_timesteps

    def frame_sigma(self, t: jax.Array) -> jax.Array:
        """t [B, F] -> sigma [B, 1, F, 1, 1] (broadcasts against latents [B, C, F, H, W])."""
        return self.sigma(t)[:, None, :, None, None]

    def add_noise_frames(self, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
        sigma = self.frame_sigma(t)
        return (1 - sigma) * x0.astype(jnp.float32) + sigma * noise.astype(jnp.float32)

    def x0_from_velocity_frames(self, x_t: jax.Array, velocity: jax.Array, t: jax.Array) -> jax.Array:
        return x_t.astype(jnp.float32) - self.frame_sigma(t) * velocity.astype(jnp.float32)

    def ode_renoise_frames(self, x_t: jax.Array, x0: jax.Array, t: jax.Array, t_next: jax.Array) -> jax.Array:
        """The deterministic step: the noise implied by (x_t, x0) at t, carried to t_next
        (eps = (x_t - (1 - sigma) x0) / sigma, x = (1 - sigma') x0 + sigma' eps)."""
        sigma = self.frame_sigma(t)
        eps = (x_t.astype(jnp.float32) - (1 - sigma) * x0) / jnp.maximum(sigma, 1e-8)
        return self.add_noise_frames(x0, eps, t_next)


def warp_steps(steps, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """s -> grid[N - s] with a trailing 0 appended to the grid (float32 [n])."""
    grid = np.concatenate([self_forcing_table(shift, num_train_timesteps).timesteps, np.zeros(1, np.float32)])
    return grid[num_train_timesteps - np.asarray(steps, np.int64)].astype(np.float32)


def denoising_steps(steps, warp: bool, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """The rollout's few-step schedule (float32 [n], noisiest first)."""
    return warp_steps(steps, shift, num_train_timesteps) if warp else np.asarray(steps, np.float32)


def exit_indices(key: jax.Array, num_chunks: int, num_steps: int, *, same_step: bool,
                 last_step_only: bool) -> jax.Array:
    """int32 [num_chunks]: the denoising step at which each chunk exits (its prediction is the output).
    Drawn from the step's shared key, so every host draws the same (FastVideo broadcasts rank 0's)."""
    if last_step_only:
        return jnp.full((num_chunks,), num_steps - 1, jnp.int32)
    key = purpose_key(key, "exit_index")
    if same_step:
        return jnp.full((num_chunks,), jax.random.randint(key, (), 0, num_steps), jnp.int32)
    return jax.random.randint(key, (num_chunks,), 0, num_steps).astype(jnp.int32)

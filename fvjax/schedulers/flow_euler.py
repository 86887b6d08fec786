"""FlowMatchEulerDiscreteScheduler (Diffusers), fixed shift, as tables plus a pure Euler step.

set_timesteps(N), as Diffusers computes it (wan_architecture.md §4.2):
- the training table's end points: sigma_max = 1, sigma_min = shift(1/1000) (float32, built at construction);
- timesteps = linspace(1000 sigma_max, 1000 sigma_min, N) in float64, sigmas = timesteps / 1000, and the shift
  applied *again* (so sigma_min is shifted twice: a Diffusers quirk we keep for parity), then cast to float32;
- model timesteps = sigmas * 1000 in float32 (not truncated); a terminal sigma 0 is appended.
Step i: x <- x + (sigma_{i+1} - sigma_i) v, in float32.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.schedulers import flow_matching as fm


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlowMatchEuler:
    """N-step tables. timesteps: float32 [N] (what the model is conditioned on); sigmas: float32 [N + 1]."""

    timesteps: jax.Array
    sigmas: jax.Array

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[0]

    def init_state(self, sample: jax.Array) -> tuple:
        """Euler keeps no solver state (an empty pytree, so the sampling loop treats every scheduler alike)."""
        del sample
        return ()

    def step(self, state: tuple, index: jax.Array, model_output: jax.Array, sample: jax.Array):
        """(x_{i+1}, state) from the velocity `model_output` at step `index` (traceable int)."""
        sigmas = jnp.asarray(self.sigmas, jnp.float32)
        dt = sigmas[index + 1] - sigmas[index]
        return sample.astype(jnp.float32) + dt * model_output.astype(jnp.float32), state


def flow_match_euler(num_steps: int, shift: float = 1.0,
                     num_train_timesteps: int = fm.NUM_TRAIN_TIMESTEPS) -> FlowMatchEuler:
    """Diffusers' FlowMatchEulerDiscreteScheduler(num_train_timesteps, shift).set_timesteps(num_steps)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    table = fm.training_table(shift, num_train_timesteps)
    sigma_max, sigma_min = float(table.sigmas[0]), float(table.sigmas[-1])
    # float64 like Diffusers' numpy path; the float32 cast comes after the (second) shift.
    unshifted = np.linspace(sigma_max * num_train_timesteps, sigma_min * num_train_timesteps,
                            num_steps) / num_train_timesteps
    sigmas = fm.shift_sigmas(unshifted, shift).astype(np.float32)
    timesteps = (sigmas * np.float32(num_train_timesteps)).astype(np.float32)
    sigmas = np.concatenate([sigmas, np.zeros(1, np.float32)])
    # device_put, not jnp.asarray: that compiles a copy program per table shape
    return FlowMatchEuler(timesteps=jax.device_put(timesteps), sigmas=jax.device_put(sigmas))

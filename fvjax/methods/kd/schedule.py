"""The teacher's ODE trajectory and the student's t_list on it (spec self_forcing.md §4, FastVideo main's
KDMethod).

The teacher integrates the flow-matching ODE from pure noise in `teacher_inference_steps` (N) Euler steps on
the grid of FastVideo's SelfForcingFlowMatchScheduler(N, shift, sigma_min 0, extra_one_step):
sigma_raw = linspace(1, 0, N + 1)[:-1] (float32, torch's two-sided linspace), sigma = shift(sigma_raw); the
trajectory's timesteps are int(1000 sigma) (FastVideo stores and conditions on the truncated integers). Each
integer timestep gets the sigma of the nearest entry of the 1000-step shifted table (`NoiseLevels`, as
FastVideo's sigma lookup), and step k moves x by (sigma_{k+1} - sigma_k) v, the last step to sigma 0 (so the
clean endpoint is the teacher's x0 prediction at the last state). That is an Euler table
(`FlowMatchEuler`), so the sampler that makes a trajectory is fvjax's ODE sampler itself.

With shift 5 and N = 48 the states 0, 12, 24, 36 sit at timesteps 1000, 937, 833, 625 (the warped 4-step
list), 995 at state 1.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fvjax.schedulers import flow_matching as fm
from fvjax.schedulers.few_step import NoiseLevels
from fvjax.schedulers.flow_euler import FlowMatchEuler


def _torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """float32 linspace as torch's CPU kernel computes it (a float32 step; start + step i in the first half,
    end - step (steps - 1 - i) in the second, each one fused multiply-add), so the truncated timesteps are
    FastVideo's to the integer."""
    step = np.float64(np.float32((np.float32(end) - np.float32(start)) / np.float32(steps - 1)))
    index = np.arange(steps)
    front = (np.float64(start) + step * index).astype(np.float32)
    back = (np.float64(end) - step * (steps - 1 - index)).astype(np.float32)
    return np.where(index < steps // 2, front, back)


def trajectory_timesteps(num_steps: int, shift: float, num_train_timesteps: int = fm.NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """The N integer timesteps of the teacher's states (int64, noisiest first, t_0 = 1000)."""
    raw = _torch_linspace(1.0, 0.0, num_steps + 1)[:-1]
    shift32 = np.float32(shift)
    sigmas = shift32 * raw / (np.float32(1) + (shift32 - np.float32(1)) * raw)
    return (sigmas * np.float32(num_train_timesteps)).astype(np.float32).astype(np.int64)


def teacher_euler(num_steps: int, shift: float, num_train_timesteps: int = fm.NUM_TRAIN_TIMESTEPS) -> FlowMatchEuler:
    """The teacher's Euler table: model timesteps = the integer trajectory timesteps, sigmas = their
    nearest-table sigmas, then 0."""
    timesteps = trajectory_timesteps(num_steps, shift, num_train_timesteps).astype(np.float32)
    sigmas = np.asarray(NoiseLevels(shift, num_train_timesteps).sigma(timesteps), np.float32)
    return FlowMatchEuler(timesteps=jnp.asarray(timesteps),
                          sigmas=jnp.asarray(np.concatenate([sigmas, np.zeros(1, np.float32)])))


def state_indices(t_list, trajectory: np.ndarray) -> tuple[tuple[int, ...] | None, tuple[int, int] | None]:
    """The trajectory state of each of t_list[:-1] (its final entry is the clean endpoint, 0).
    Returns (indices, None), or (None, (position in t_list, nearest trajectory timestep)) for the first
    entry that is not a trajectory timestep."""
    found = []
    for i, t in enumerate(t_list[:-1]):
        hits = np.flatnonzero(trajectory == int(t))
        if not hits.size:
            return None, (i, int(trajectory[np.argmin(np.abs(trajectory - int(t)))]))
        found.append(int(hits[0]))
    return tuple(found), None

"""The few-step sampler DMD2 students are trained for (spec §3), shared by training (the rollouts) and
inference (`fvjax.inference.sampling`'s "dmd" sampler).

- `NoiseLevels`: FlowMatchEulerDiscreteScheduler(shift)'s training table with nearest-timestep lookup; a
  timestep t (possibly not on its grid) is noised with the sigma of the nearest table entry and x0 is
  recovered with that same sigma.
- The chain over S = [s_0 > ... > s_{n-1}] from noise: x0_j = x0_fn(x, s_j), x <- add_noise(x0_j, fresh eps_j,
  s_{j+1}); `few_step_sample` returns the last prediction.
- `warp_timesteps`: s -> the shifted table's timestep at index 1000 - s (a trailing 0 appended).

`x0_fn(params, x_t, t) -> x0` is the model's x0 prediction at one timestep t (a scalar shared by the batch).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.keys import purpose_key, standard_normal
from fvjax.schedulers import flow_matching as fm

X0Fn = Callable[[object, jax.Array, jax.Array], jax.Array]


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


def warp_timesteps(steps, flow_shift: float, num_train_timesteps: int = fm.NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """Few-step timesteps warped onto the shifted table (float32 [n]): s -> timesteps[N - s], where the
    table gets a trailing 0, i.e. N * sh * u / (1 + (sh - 1) u) with u = s / N."""
    steps = np.asarray(steps, np.int64)
    timesteps = np.concatenate([fm.training_table(flow_shift, num_train_timesteps).timesteps, np.zeros(1, np.float32)])
    return timesteps[num_train_timesteps - steps].astype(np.float32)


def chain_scan(x0_fn: X0Fn, params, noise: jax.Array, steps: jax.Array, levels: NoiseLevels, key: jax.Array,
                length: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The first `length` steps of the chain without gradient: (the state after them, inputs [length, ...],
    x0s [length, ...]).
    Step j sees inputs[j] (inputs[0] = the noise) and predicts x0s[j]; step j + 1 sees add_noise(x0s[j],
    fresh eps_j, s_{j+1}). The re-noising keys depend only on n, not on `length`."""
    n = steps.shape[0]
    frozen = jax.lax.stop_gradient(params)
    keys = jax.random.split(purpose_key(key, "renoise"), max(n - 1, 1))
    next_steps = jnp.concatenate([steps[1:], jnp.zeros((1,), steps.dtype)])   # the last step re-noises nothing

    def step(x, xs):
        t, t_next, step_key = xs
        x0 = x0_fn(frozen, x, t)
        x_next = levels.add_noise(x0, standard_normal(step_key, x.shape), t_next)
        return x_next, (x, x0)

    keys = jnp.concatenate([keys, keys[-1:]])[:length]
    final, (inputs, x0s) = jax.lax.scan(step, noise, (steps[:length], next_steps[:length], keys))
    return jax.lax.stop_gradient((final, inputs, x0s))


def renoising_chain(x0_fn: X0Fn, params, noise: jax.Array, steps: jax.Array, levels: NoiseLevels,
                     key: jax.Array) -> jax.Array:
    """[n, ...]: the noise, then the state after each of the n - 1 re-noisings (n - 1 no-grad forwards)."""
    n = steps.shape[0]
    if n == 1:
        return noise[None]
    final, inputs, _ = chain_scan(x0_fn, params, noise, steps, levels, key, n - 1)
    return jnp.concatenate([inputs, final[None]])


def few_step_sample(x0_fn: X0Fn, params, noise: jax.Array, steps: jax.Array, levels: NoiseLevels,
                    key: jax.Array) -> jax.Array:
    """DMD inference: the whole chain from `noise`, then the x0 prediction at the last step."""
    steps = jnp.asarray(steps, jnp.float32)
    chain = renoising_chain(x0_fn, params, noise.astype(jnp.float32), steps, levels, key)
    return x0_fn(params, chain[-1], steps[-1])

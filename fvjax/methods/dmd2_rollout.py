"""The student's rollouts for DMD2 (spec §3) and the few-step sampler they imitate.

`x0_fn(params, x_t, t) -> x0` is the student's x0 prediction at one timestep t (a scalar shared by the
batch). Both rollouts draw the exit index k ~ U{0..n-1} over the few-step list S = [s_0 > ... > s_{n-1}]:

- simulate: from pure noise, the chain j = 0..n-2 runs without gradient whatever k is (n - 1 forwards,
  as FastVideo): x0_j = x0_fn(x, s_j); x <- add_noise(x0_j, fresh eps_j, s_{j+1}). The input of the exit
  step is the noise (k = 0) or the state after k re-noisings; the exit prediction x0_fn(input, s_k) is
  the only one the gradient flows through.
- data_latent: x_t = add_noise(dataset latent, eps, s_k); x0 = x0_fn(x_t, s_k).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fvjax.methods.common import purpose_key
from fvjax.methods.dmd2_schedule import NoiseLevels

X0Fn = Callable[[object, jax.Array, jax.Array], jax.Array]


class Rollout(NamedTuple):
    x0: jax.Array           # the student's prediction at the exit step (float32)
    exit_index: jax.Array   # int32 k
    exit_input: jax.Array   # what the exit step saw (no gradient path)


def _exit_index(key: jax.Array, n: int) -> jax.Array:
    return jax.random.randint(purpose_key(key, "exit_index"), (), 0, n)


def _chain_scan(x0_fn: X0Fn, params, noise: jax.Array, steps: jax.Array, levels: NoiseLevels, key: jax.Array,
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
        x_next = levels.add_noise(x0, jax.random.normal(step_key, x.shape, jnp.float32), t_next)
        return x_next, (x, x0)

    keys = jnp.concatenate([keys, keys[-1:]])[:length]
    final, (inputs, x0s) = jax.lax.scan(step, noise, (steps[:length], next_steps[:length], keys))
    return jax.lax.stop_gradient((final, inputs, x0s))


def _renoising_chain(x0_fn: X0Fn, params, noise: jax.Array, steps: jax.Array, levels: NoiseLevels,
                     key: jax.Array) -> jax.Array:
    """[n, ...]: the noise, then the state after each of the n - 1 re-noisings (n - 1 no-grad forwards)."""
    n = steps.shape[0]
    if n == 1:
        return noise[None]
    final, inputs, _ = _chain_scan(x0_fn, params, noise, steps, levels, key, n - 1)
    return jnp.concatenate([inputs, final[None]])


def simulate_rollout(x0_fn: X0Fn, params, shape: tuple[int, ...], steps: jax.Array, levels: NoiseLevels,
                     key: jax.Array) -> Rollout:
    steps = jnp.asarray(steps, jnp.float32)
    k = _exit_index(key, steps.shape[0])
    noise = jax.random.normal(purpose_key(key, "initial_noise"), shape, jnp.float32)
    chain = _renoising_chain(x0_fn, params, noise, steps, levels, key)
    exit_input = chain[k]
    return Rollout(x0_fn(params, exit_input, steps[k]), k, exit_input)


def simulate_rollout_no_grad(x0_fn: X0Fn, params, shape: tuple[int, ...], steps: jax.Array, levels: NoiseLevels,
                             key: jax.Array) -> Rollout:
    """simulate_rollout without gradient, equal in result: the exit prediction is taken from one scan
    over all n steps (n forwards, as FastVideo's n - 1 + 1), so the model is compiled once, not twice."""
    steps = jnp.asarray(steps, jnp.float32)
    k = _exit_index(key, steps.shape[0])
    noise = jax.random.normal(purpose_key(key, "initial_noise"), shape, jnp.float32)
    _, inputs, x0s = _chain_scan(x0_fn, params, noise, steps, levels, key, steps.shape[0])
    return Rollout(x0s[k], k, inputs[k])


def data_latent_rollout(x0_fn: X0Fn, params, latents: jax.Array, steps: jax.Array, levels: NoiseLevels,
                        key: jax.Array) -> Rollout:
    steps = jnp.asarray(steps, jnp.float32)
    k = _exit_index(key, steps.shape[0])
    noise = jax.random.normal(purpose_key(key, "latent_noise"), latents.shape, jnp.float32)
    exit_input = levels.add_noise(latents, noise, steps[k])
    return Rollout(x0_fn(params, exit_input, steps[k]), k, exit_input)


def few_step_sample(x0_fn: X0Fn, params, noise: jax.Array, steps: jax.Array, levels: NoiseLevels,
                    key: jax.Array) -> jax.Array:
    """DMD inference: the whole chain from `noise`, then the x0 prediction at the last step."""
    steps = jnp.asarray(steps, jnp.float32)
    chain = _renoising_chain(x0_fn, params, noise.astype(jnp.float32), steps, levels, key)
    return x0_fn(params, chain[-1], steps[-1])

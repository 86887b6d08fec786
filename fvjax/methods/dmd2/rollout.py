"""The student's rollouts for DMD2 (spec §3), on the few-step chain of fvjax/schedulers/few_step.py.

`x0_fn(params, x_t, t) -> x0` is the student's x0 prediction at one timestep t (a scalar shared by the
batch). Both rollouts draw the exit index k ~ U{0..n-1} over the few-step list S = [s_0 > ... > s_{n-1}]:

- simulate: from pure noise, the chain j = 0..n-2 runs without gradient whatever k is (n - 1 forwards,
  as FastVideo): x0_j = x0_fn(x, s_j); x <- add_noise(x0_j, fresh eps_j, s_{j+1}). The input of the exit
  step is the noise (k = 0) or the state after k re-noisings; the exit prediction x0_fn(input, s_k) is
  the only one the gradient flows through.
- data_latent: x_t = add_noise(dataset latent, eps, s_k); x0 = x0_fn(x_t, s_k).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fvjax.keys import purpose_key, standard_normal
from fvjax.schedulers.few_step import NoiseLevels, X0Fn, chain_scan, renoising_chain


class Rollout(NamedTuple):
    x0: jax.Array           # the student's prediction at the exit step (float32)
    exit_index: jax.Array   # int32 k
    exit_input: jax.Array   # what the exit step saw (no gradient path)


def _exit_index(key: jax.Array, n: int) -> jax.Array:
    return jax.random.randint(purpose_key(key, "exit_index"), (), 0, n)


def simulate_rollout(x0_fn: X0Fn, params, shape: tuple[int, ...], steps: jax.Array, levels: NoiseLevels,
                     key: jax.Array) -> Rollout:
    steps = jnp.asarray(steps, jnp.float32)
    k = _exit_index(key, steps.shape[0])
    noise = standard_normal(purpose_key(key, "initial_noise"), shape)
    chain = renoising_chain(x0_fn, params, noise, steps, levels, key)
    exit_input = chain[k]
    return Rollout(x0_fn(params, exit_input, steps[k]), k, exit_input)


def simulate_rollout_no_grad(x0_fn: X0Fn, params, shape: tuple[int, ...], steps: jax.Array, levels: NoiseLevels,
                             key: jax.Array) -> Rollout:
    """simulate_rollout without gradient, equal in result: the exit prediction is taken from one scan
    over all n steps (n forwards, as FastVideo's n - 1 + 1), so the model is compiled once, not twice."""
    steps = jnp.asarray(steps, jnp.float32)
    k = _exit_index(key, steps.shape[0])
    noise = standard_normal(purpose_key(key, "initial_noise"), shape)
    _, inputs, x0s = chain_scan(x0_fn, params, noise, steps, levels, key, steps.shape[0])
    return Rollout(x0s[k], k, inputs[k])


def data_latent_rollout(x0_fn: X0Fn, params, latents: jax.Array, steps: jax.Array, levels: NoiseLevels,
                        key: jax.Array) -> Rollout:
    steps = jnp.asarray(steps, jnp.float32)
    k = _exit_index(key, steps.shape[0])
    noise = standard_normal(purpose_key(key, "latent_noise"), latents.shape)
    exit_input = levels.add_noise(latents, noise, steps[k])
    return Rollout(x0_fn(params, exit_input, steps[k]), k, exit_input)

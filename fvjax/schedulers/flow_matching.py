"""Flow matching as FastVideo trains it (spec §4): shifted sigmas, timestep densities, noising, targets, loss.

Convention (rectified flow, as Wan / Diffusers' FlowMatchEulerDiscreteScheduler):
    x_t = (1 - sigma) * x0 + sigma * eps,    velocity v = eps - x0,    x0 = x_t - sigma * v,
with sigma in (0, 1] and the model timestep t = sigma * num_train_timesteps.

Training draws u in [0, 1) from a density (`weighting_scheme`), takes idx = floor(u * 1000) into the
scheduler's training table (timesteps descending from 1000, i.e. idx 0 = most noise) and uses
t = timesteps[idx], sigma = sigmas[idx]. `weighting_scheme` only changes the sampling density; the
loss has no per-timestep weight.

Every function is pure JAX (randomness only from the key passed in), so it can live inside a jitted update.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.schema.pipeline_config import NUM_TRAIN_TIMESTEPS  # noqa: F401  (defined once, with the schema)


def shift_sigmas(sigmas, shift: float):
    """The timestep shift of Wan/SD3: s -> shift * s / (1 + (shift - 1) * s). shift = 1 is the identity."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


class TrainingTable(NamedTuple):
    """The scheduler's training table, index 0 = most noise. Both float32 [num_train_timesteps]."""

    sigmas: np.ndarray
    timesteps: np.ndarray


def training_table(shift: float = 1.0, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> TrainingTable:
    """Sigmas and timesteps of FlowMatchEulerDiscreteScheduler(num_train_timesteps, shift) right after
    construction (no dynamic shifting), computed in float32 in the same order as Diffusers so the
    values agree to the last bit or two."""
    n = num_train_timesteps
    unshifted = np.linspace(1, n, n, dtype=np.float32)[::-1] / np.float32(n)
    shift32 = np.float32(shift)
    sigmas = (shift32 * unshifted / (np.float32(1) + (shift32 - np.float32(1)) * unshifted)).astype(np.float32)
    timesteps = (sigmas * np.float32(n)).astype(np.float32)
    return TrainingTable(sigmas=sigmas, timesteps=timesteps)


def sample_u(key: jax.Array, shape, weighting_scheme: str = "uniform", logit_mean: float = 0.0,
             logit_std: float = 1.0, mode_scale: float = 1.29) -> jax.Array:
    """u in [0, 1) from FastVideo's density for `weighting_scheme` (float32):
    logit_normal: sigmoid(N(logit_mean, logit_std)); mode: 1 - r - mode_scale * (cos^2(pi r / 2) - 1 + r)
    with r ~ U(0, 1); anything else: U(0, 1)."""
    if weighting_scheme == "logit_normal":
        normal = logit_mean + logit_std * jax.random.normal(key, shape, jnp.float32)
        return jax.nn.sigmoid(normal)
    r = jax.random.uniform(key, shape, jnp.float32)
    if weighting_scheme == "mode":
        return 1.0 - r - mode_scale * (jnp.cos(jnp.pi * r / 2) ** 2 - 1.0 + r)
    return r


class TimestepSample(NamedTuple):
    index: jax.Array      # int32 [B], into the training table
    timestep: jax.Array   # float32 [B], what the model is conditioned on (0..1000)
    sigma: jax.Array      # float32 [B], the noise level used for x_t


def sample_timesteps(key: jax.Array, batch_size: int, table: TrainingTable, weighting_scheme: str = "uniform",
                     logit_mean: float = 0.0, logit_std: float = 1.0, mode_scale: float = 1.29) -> TimestepSample:
    """One (index, timestep, sigma) per sample: idx = floor(u * N), clipped into the table (a float32
    sigmoid can round to exactly 1.0; the mode density can leave [0, 1) for mode_scale > ~1.3)."""
    n = table.sigmas.shape[0]
    u = sample_u(key, (batch_size,), weighting_scheme, logit_mean, logit_std, mode_scale)
    index = jnp.clip(jnp.floor(u * n).astype(jnp.int32), 0, n - 1)
    return TimestepSample(index=index, timestep=jnp.asarray(table.timesteps)[index],
                          sigma=jnp.asarray(table.sigmas)[index])


def _per_sample(sigma: jax.Array, like: jax.Array) -> jax.Array:
    """[B] -> [B, 1, ..., 1] so it broadcasts over a sample's other axes."""
    sigma = jnp.asarray(sigma)
    return sigma.reshape(sigma.shape + (1,) * (like.ndim - sigma.ndim)).astype(like.dtype)


def add_noise(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
    """x_t = (1 - sigma) x0 + sigma eps, sigma per sample [B]."""
    s = _per_sample(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
    """The flow-matching regression target eps - x0."""
    return noise - x0


def x0_from_velocity(x_t: jax.Array, velocity: jax.Array, sigma: jax.Array) -> jax.Array:
    """x0 = x_t - sigma v (exact inverse of add_noise when v = eps - x0)."""
    return x_t - _per_sample(sigma, x_t) * velocity


def flow_matching_loss(pred_velocity: jax.Array, x0: jax.Array, noise: jax.Array, x_t: jax.Array,
                       sigma: jax.Array, precondition_outputs: bool = False) -> jax.Array:
    """FastVideo's finetune loss, a float32 scalar mean over all elements:
    MSE(v_pred, eps - x0), or with `precondition_outputs` (pred_type x0) MSE(x_t - sigma v_pred, x0)."""
    pred_velocity = pred_velocity.astype(jnp.float32)
    x0 = x0.astype(jnp.float32)
    if precondition_outputs:
        pred_x0 = x0_from_velocity(x_t.astype(jnp.float32), pred_velocity, sigma)
        return jnp.mean((pred_x0 - x0) ** 2)
    return jnp.mean((pred_velocity - velocity_target(x0, noise.astype(jnp.float32))) ** 2)


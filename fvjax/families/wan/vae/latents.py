"""Latent normalisation (Wan's per-channel statistics) and posterior sampling.

The DiT works on normalised latents: z_norm = (z - mean) / std. Decoding needs the raw latents back:
z = z_norm * std + mean. (Diffusers' pipelines write this as (z - mean) * (1 / std) and
z / (1 / std) + mean; the numbers agree to float rounding.)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fvjax.families.wan.vae.config import WanVAEConfig
from fvjax.keys import standard_normal


def _stats(config: WanVAEConfig, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    if z.ndim != 5 or z.shape[1] != config.z_dim:
        raise ValueError(f"latents must be [B, {config.z_dim}, T, h, w]; got shape {z.shape}")
    shape = (1, config.z_dim, 1, 1, 1)
    mean = jnp.asarray(config.latents_mean, jnp.float32).reshape(shape)
    std = jnp.asarray(config.latents_std, jnp.float32).reshape(shape)
    return mean, std


def normalize_latents(z, config: WanVAEConfig) -> jax.Array:
    """Raw VAE latents [B, z_dim, T, h, w] -> the DiT's normalised latents (float32)."""
    z = jnp.asarray(z, jnp.float32)
    mean, std = _stats(config, z)
    return (z - mean) / std


def denormalize_latents(z, config: WanVAEConfig) -> jax.Array:
    """The DiT's normalised latents -> raw latents for `WanVAE.decode` (float32)."""
    z = jnp.asarray(z, jnp.float32)
    mean, std = _stats(config, z)
    return z * std + mean


def sample_posterior(mean, logvar, key: jax.Array) -> jax.Array:
    """A draw from the diagonal Gaussian posterior: mean + exp(logvar / 2) * N(0, 1) (float32)."""
    mean = jnp.asarray(mean, jnp.float32)
    noise = standard_normal(key, mean.shape)   # jax.random.normal's numbers, compiled faster
    return mean + jnp.exp(0.5 * jnp.asarray(logvar, jnp.float32)) * noise

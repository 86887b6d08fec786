"""Wan condition embedder: timestep sinusoid -> time MLP -> 6-way modulation; text projection.

Precision: the whole time path (sinusoid, time_embedder, time_proj) runs in fp32 whatever the compute
dtype — as in the original Wan (Diffusers runs `time_proj` in bf16 under a bf16 load; that is a cheap
[B, D] x [D, 6D] matmul, so we keep the more precise variant). The text projection runs in `dtype`.

Timesteps may be [B] or per-frame [B, F]; the time path works on a trailing-frame layout
[B, Ft, ...] (Ft = 1 for [B]) so per-frame modulation needs no other change.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from fvjax.families.wan.config import WanConfig
from fvjax.models.layers import Dense


def timestep_sinusoid(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """[..., dim] fp32 embedding [cos(t*f) | sin(t*f)], f_i = max_period^(-i/half) (Diffusers
    `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)`; an odd `dim` gets one zero pad)."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half
    args = t.astype(jnp.float32)[..., None] * jnp.exp(exponent)
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return emb


class TimeEmbedder(nnx.Module):
    """linear_1 (freq_dim -> D) -> SiLU -> linear_2 (D -> D); always fp32."""

    def __init__(self, config: WanConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        d = config.inner_dim
        self.linear_1 = Dense(config.freq_dim, d, axes=("freq", "embed"), rngs=rngs, param_dtype=param_dtype)
        self.linear_2 = Dense(d, d, axes=("embed", "embed_out"), rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class TextEmbedder(nnx.Module):
    """linear_1 (text_dim -> D) -> GELU(tanh) -> linear_2 (D -> D), in the compute dtype."""

    def __init__(self, config: WanConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        d = config.inner_dim
        self.linear_1 = Dense(config.text_dim, d, axes=("text_embed", "embed"), rngs=rngs,
                              param_dtype=param_dtype, dtype=dtype)
        self.linear_2 = Dense(d, d, axes=("embed", "embed_out"), rngs=rngs, param_dtype=param_dtype,
                              dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.gelu(self.linear_1(x), approximate=True))


class ConditionEmbedder(nnx.Module):
    """Diffusers `WanTimeTextImageEmbedding` (T2V part)."""

    def __init__(self, config: WanConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        d = config.inner_dim
        self.freq_dim = config.freq_dim
        self.time_embedder = TimeEmbedder(config, rngs=rngs, param_dtype=param_dtype)
        self.time_proj = Dense(d, 6 * d, axes=("embed", "mod_embed"), rngs=rngs, param_dtype=param_dtype)
        self.text_embedder = TextEmbedder(config, rngs=rngs, param_dtype=param_dtype, dtype=dtype)

    def __call__(self, timestep: jax.Array, text: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """timestep [B] or [B, Ft]; text [B, Lt, text_dim].

        Returns temb [B, Ft, D] (fp32; drives the output head), modulation [B, Ft, 6, D] (fp32;
        drives the blocks) and text tokens [B, Lt, D] in the compute dtype.
        """
        temb, mod = self.time(timestep)
        return temb, mod, self.text_embedder(text)

    def time(self, timestep: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The time path alone: timestep [B] or [B, Ft] -> temb [B, Ft, D], modulation [B, Ft, 6, D] (fp32)."""
        if timestep.ndim == 1:
            timestep = timestep[:, None]
        temb = self.time_embedder(timestep_sinusoid(timestep, self.freq_dim))
        mod = self.time_proj(jax.nn.silu(temb))
        return temb, mod.reshape(*mod.shape[:-1], 6, mod.shape[-1] // 6)

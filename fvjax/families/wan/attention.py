"""Wan attention: q/k/v projections, RMSNorm of q and k across all heads, RoPE (self-attention only),
scaled dot-product attention through `fvjax.models.attention`, output projection.

The self-attention's pattern is a parameter (`attend`): the bidirectional DiT attends every token to
every token; the causal Wan (fvjax/families/wan/causal/) passes block-causal or KV-cache patterns,
which also hand back a per-layer side output (the chunk's roped K/V)."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from fvjax.models.attention import attention
from fvjax.families.wan.config import WanConfig
from fvjax.models.layers import Dense, RMSNorm
from fvjax.families.wan.rope import apply_rope
from fvjax.sharding import constrain

HEAD_AXES = ("act_batch", "act_seq", "act_heads", "act_head_dim")
TEXT_HEAD_AXES = ("act_batch", "act_text", "act_heads", "act_head_dim")


class WanAttention(nnx.Module):
    def __init__(self, config: WanConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 attention_backend: str = "auto"):
        d = config.inner_dim
        self.num_heads = config.num_attention_heads
        self.attention_backend = attention_backend
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.to_q = Dense(d, d, axes=("embed", "heads"), **kw)
        self.to_k = Dense(d, d, axes=("embed", "heads"), **kw)
        self.to_v = Dense(d, d, axes=("embed", "heads"), **kw)
        self.to_out = Dense(d, d, axes=("heads", "embed"), **kw)
        self.norm_q = RMSNorm(d, config.eps, axes=("heads",), rngs=rngs, param_dtype=param_dtype)
        self.norm_k = RMSNorm(d, config.eps, axes=("heads",), rngs=rngs, param_dtype=param_dtype)

    def _heads(self, x: jax.Array, axes) -> jax.Array:
        b, l, d = x.shape
        return constrain(x.reshape(b, l, self.num_heads, d // self.num_heads), axes)

    def self_attention(self, x: jax.Array, rope: tuple[jax.Array, jax.Array],
                       attend: Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, Any]]
                       ) -> tuple[jax.Array, Any]:
        """Self-attention with the pattern `attend(q, k, v) -> (out [B, L, H, Dh], side output)`, q and k
        roped; returns (projected output, side output)."""
        q = self._heads(self.norm_q(self.to_q(x)), HEAD_AXES)
        k = self._heads(self.norm_k(self.to_k(x)), HEAD_AXES)
        v = self._heads(self.to_v(x), HEAD_AXES)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = (checkpoint_name(a, "qkv") for a in (q, k, v))
        out, side = attend(q, k, v)
        out = constrain(out, HEAD_AXES)
        b, l = out.shape[:2]
        return self.to_out(out.reshape(b, l, -1)), side

    def __call__(self, x: jax.Array, context: jax.Array | None = None,
                 rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """x [B, L, D] (compute dtype). Self-attention when `context` is None (RoPE applied to q, k);
        cross-attention to `context` [B, Lt, D] otherwise (no RoPE, no mask)."""
        kv_source = x if context is None else context
        kv_axes = HEAD_AXES if context is None else TEXT_HEAD_AXES
        q = self._heads(self.norm_q(self.to_q(x)), HEAD_AXES)
        k = self._heads(self.norm_k(self.to_k(kv_source)), kv_axes)
        v = self._heads(self.to_v(kv_source), kv_axes)
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
            q, k, v = (checkpoint_name(a, "qkv") for a in (q, k, v))
        out = attention(q, k, v, backend=self.attention_backend)
        out = constrain(out, HEAD_AXES)
        b, l = out.shape[:2]
        return self.to_out(out.reshape(b, l, -1))

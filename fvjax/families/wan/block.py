"""One Wan transformer block: modulated self-attention, cross-attention, modulated FFN.

Norms, modulation and gated residual adds are computed in fp32; the results are cast to the compute
dtype before matmuls and to the residual dtype between sublayers (see transformer.py for the
residual-stream choice). Modulation comes as [B, Ft, 6, D] with Ft = 1 (one timestep per sample) or
Ft = number of latent frames (per-frame timesteps); tokens are frame-major, so per-frame modulation is
applied on a [B, Ft, L/Ft, D] view of the tokens.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from fvjax.families.wan.attention import WanAttention
from fvjax.families.wan.config import WanConfig
from fvjax.models.layers import AffineLayerNorm, Dense, layer_norm_fp32
from fvjax.sharding import constrain

ACT_AXES = ("act_batch", "act_seq", "act_embed")
MLP_AXES = ("act_batch", "act_seq", "act_mlp")


def _frames(x: jax.Array, num_frames: int) -> jax.Array:
    """[B, L, D] -> [B, Ft, L/Ft, D] (tokens are frame-major; Ft = 1 is a free reshape)."""
    b, l, d = x.shape
    return x.reshape(b, num_frames, l // num_frames, d)


def modulate(x32: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """x * (1 + scale) + shift with per-frame shift/scale [B, Ft, D]; fp32."""
    frames = _frames(x32, shift.shape[1])
    out = frames * (1.0 + scale[:, :, None, :]) + shift[:, :, None, :]
    return out.reshape(x32.shape)


@functools.partial(jax.checkpoint, static_argnums=(3,))
def norm_modulate(x: jax.Array, shift: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """modulate(layer_norm_fp32(x)), fp32. Checkpointed: the backward keeps x and recomputes the norm's fp32
    intermediates (three [B, L, D] fp32 arrays otherwise; PyTorch's fused layer norm keeps one)."""
    return modulate(layer_norm_fp32(x, eps), shift, scale)


# GELU(tanh) keeping only its input for the backward, as PyTorch's fused GELU does; autodiff of the
# composite would keep four [B, L, ffn_dim] intermediates (at 1.3B widths a quarter of a block's residuals).
gelu_tanh = jax.checkpoint(functools.partial(jax.nn.gelu, approximate=True))


def gated_add(residual: jax.Array, update: jax.Array, gate: jax.Array) -> jax.Array:
    """residual + update * gate with a per-frame gate [B, Ft, D]; fp32."""
    gated = _frames(update.astype(jnp.float32), gate.shape[1]) * gate[:, :, None, :]
    return residual.astype(jnp.float32) + gated.reshape(update.shape)


class FeedForward(nnx.Module):
    """proj_in (D -> ffn_dim) -> GELU(tanh) -> proj_out (ffn_dim -> D)."""

    def __init__(self, config: WanConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        d, f = config.inner_dim, config.ffn_dim
        self.proj_in = Dense(d, f, axes=("embed", "mlp"), rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.proj_out = Dense(f, d, axes=("mlp", "embed"), rngs=rngs, param_dtype=param_dtype, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = constrain(gelu_tanh(self.proj_in(x)), MLP_AXES)
        return self.proj_out(hidden)


class WanBlock(nnx.Module):
    def __init__(self, config: WanConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 attention_backend: str = "auto"):
        d = config.inner_dim
        self.eps = config.eps
        self.dtype = dtype
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.attn1 = WanAttention(config, attention_backend=attention_backend, **kw)
        self.attn2 = WanAttention(config, attention_backend=attention_backend, **kw)
        if not config.cross_attn_norm:
            raise ValueError("cross_attn_norm=False is not supported (every Wan2.1 checkpoint uses True)")
        self.norm2 = AffineLayerNorm(d, config.eps, rngs=rngs, param_dtype=param_dtype)
        self.ffn = FeedForward(config, **kw)
        table = jax.random.normal(rngs.params(), (1, 6, d), jnp.float32) / d ** 0.5
        self.scale_shift_table = nnx.Param(table.astype(param_dtype), logical_axes=(None, "mod", "embed"))

    def __call__(self, x: jax.Array, context: jax.Array, modulation: jax.Array,
                 rope: tuple[jax.Array, jax.Array]) -> jax.Array:
        """x [B, L, D] (residual dtype), context [B, Lt, D], modulation [B, Ft, 6, D] fp32."""
        return self.forward(x, context, modulation, rope)[0]

    def forward(self, x: jax.Array, context: jax.Array, modulation: jax.Array, rope: tuple[jax.Array, jax.Array],
                attend: Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, Any]] | None = None
                ) -> tuple[jax.Array, Any]:
        """The block with the self-attention pattern `attend` (WanAttention.self_attention; None = every
        token to every token); returns (x, the pattern's side output)."""
        residual_dtype = x.dtype
        mod = self.scale_shift_table[...].astype(jnp.float32)[:, None] + modulation
        shift, scale, gate, c_shift, c_scale, c_gate = (mod[:, :, i] for i in range(6))

        normed = norm_modulate(x, shift, scale, self.eps).astype(self.dtype)
        if attend is None:
            attn, side = self.attn1(normed, rope=rope), None
        else:
            attn, side = self.attn1.self_attention(normed, rope, attend)
        attn = checkpoint_name(attn, "attn_out")
        x = constrain(gated_add(x, attn, gate).astype(residual_dtype), ACT_AXES)

        normed = self.norm2(x).astype(self.dtype)
        x = constrain(x + self.attn2(normed, context).astype(residual_dtype), ACT_AXES)

        normed = norm_modulate(x, c_shift, c_scale, self.eps).astype(self.dtype)
        x = gated_add(x, self.ffn(normed), c_gate).astype(residual_dtype)
        return constrain(x, ACT_AXES), side

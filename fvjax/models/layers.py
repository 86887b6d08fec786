"""Small NNX layers for the Wan DiT: Dense, fp32 LayerNorm, RMSNorm.

Every parameter carries its logical axis names as `logical_axes` metadata (per layer, without the
stacked "layers" axis); `transformer.param_logical_axes` reads them from an abstract model, so the
names live next to the parameter they describe. We do not use nnx's `sharding_names` metadata on
purpose: that would make parameter creation shard eagerly under an active mesh, while fvjax decides
shardings in one place (fvjax/sharding) from rules.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from fvjax.models import matmuls

Axes = tuple[str | None, ...]


def param(rngs_key, init, shape, param_dtype, axes: Axes) -> nnx.Param:
    return nnx.Param(init(rngs_key, shape, param_dtype), logical_axes=tuple(axes))


class Dense(nnx.Module):
    """y = x @ kernel + bias, computed in `dtype` (params are cast from `param_dtype` at use).

    `lora`: a low-rank adapter (fvjax/lora/factors.py) attached to this layer after construction, or
    None; its delta is added to the output (fvjax/lora: x @ A @ B * scale, W itself is never changed).
    """
    lora = None

    def __init__(self, in_features: int, out_features: int, *, axes: Axes, rngs: nnx.Rngs,
                 param_dtype=jnp.float32, dtype=jnp.float32, bias_axes: Axes | None = None):
        self.dtype = dtype
        self.kernel = param(rngs.params(), nnx.initializers.lecun_normal(), (in_features, out_features),
                            param_dtype, axes)
        self.bias = param(rngs.params(), nnx.initializers.zeros_init(), (out_features,), param_dtype,
                          bias_axes if bias_axes is not None else (axes[-1],))

    def __call__(self, x: jax.Array) -> jax.Array:
        # A 2-D matmul: its kernel gradient is one plain [in, rows] x [rows, out] product; contracting
        # over (batch, seq) as a 3-D dot_general costs XLA:CPU a transposed copy (1.6x slower fwd+bwd).
        lead = x.shape[:-1]
        x2 = x.astype(self.dtype).reshape(-1, x.shape[-1])
        # fvjax/models/matmuls.py: on the CPU with a backward XLA:CPU runs on YNNPACK
        y = matmuls.matmul(x2, self.kernel[...].astype(self.dtype)) + self.bias[...].astype(self.dtype)
        if self.lora is not None:
            y = y + self.lora(x2)
        return y.reshape(*lead, y.shape[-1])


def layer_norm_fp32(x: jax.Array, eps: float) -> jax.Array:
    """LayerNorm without affine, statistics and result in fp32 (Diffusers' FP32LayerNorm)."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    var = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
    return centered * jax.lax.rsqrt(var + eps)


class AffineLayerNorm(nnx.Module):
    """fp32 LayerNorm with scale and bias (Diffusers `norm2`, the cross-attention pre-norm)."""

    def __init__(self, features: int, eps: float, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = param(rngs.params(), nnx.initializers.ones_init(), (features,), param_dtype, ("embed",))
        self.bias = param(rngs.params(), nnx.initializers.zeros_init(), (features,), param_dtype, ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns fp32; the caller casts to the compute dtype."""
        return _affine_layer_norm(x, self.scale[...], self.bias[...], self.eps)


# The norms below are checkpointed: their backward keeps the input and recomputes the fp32 intermediates
# (cheap elementwise work), which autodiff would otherwise keep per layer (2-3 fp32 copies of [B, L, D]).
@functools.partial(jax.checkpoint, static_argnums=(3,))
def _affine_layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    return layer_norm_fp32(x, eps) * scale.astype(jnp.float32) + bias.astype(jnp.float32)


@functools.partial(jax.checkpoint, static_argnums=(2,))
def _rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return normed.astype(x.dtype) * scale.astype(x.dtype)


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis with a learnable scale; statistics in fp32, output in x's dtype.

    In Wan it normalises q and k over the whole inner dim (all heads together, "rms_norm_across_heads").
    """

    def __init__(self, features: int, eps: float, *, axes: Axes, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = param(rngs.params(), nnx.initializers.ones_init(), (features,), param_dtype, axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return _rms_norm(x, self.scale[...], self.eps)

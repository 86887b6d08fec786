"""The UMT5 encoder (transformers' `UMT5EncoderModel`, Wan2.1's text encoder) in Flax NNX.

    encoder = UMT5Encoder(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    hidden = encoder(input_ids [B, L] int32, attention_mask [B, L])   # [B, L, d_model] float32

Per layer (pre-norm, residual): T5 RMS norm (no mean, no bias) -> self-attention with bias-free q/k/v/o,
scores q.k WITHOUT 1/sqrt(d_kv) scaling plus the layer's OWN relative-position bias (UMT5; T5 shares
layer 0's), padding keys masked -> T5 RMS norm -> gated FFN act(x wi_0) * (x wi_1) wo. A final RMS norm.

Precision: matmuls run in `dtype`; norms, attention scores/softmax, the residual stream, the FFN output
projection (transformers keeps `wo` in fp32 for half-precision loads) and the output are fp32.
Layers are created stacked (nnx.vmap) and run under one `jax.lax.scan`, as the Wan DiT does.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fvjax.models import params as trees
from fvjax.models.layers import Axes, param
from fvjax.models.params import count_params, params_of  # noqa: F401  (part of this module's API)
from fvjax.families.wan.text.umt5_config import UMT5Config

_ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int, max_distance: int
                              ) -> np.ndarray:
    """int32 [query_length, key_length]: the bidirectional T5 bucket of each (query, key) offset.

    Half of the buckets per direction (sign of key - query); within a direction, offsets below
    num_buckets/4 are exact, larger ones logarithmic up to max_distance. Computed in float32 like
    transformers (so boundary offsets land in the same bucket), at trace time: lengths are static.
    """
    offset = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
    half = num_buckets // 2
    max_exact = half // 2
    distance = np.abs(offset)
    safe = np.maximum(distance, max_exact).astype(np.float32)  # the log branch is only used from max_exact on
    ratio = np.log(safe / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
    large = max_exact + (ratio * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    buckets = (offset > 0) * half + np.where(distance < max_exact, distance, large)
    return buckets.astype(np.int32)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """T5 layer norm in fp32: x / sqrt(mean(x^2) + eps) * scale."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps) * scale.astype(jnp.float32)


class Linear(nnx.Module):
    """y = x @ kernel (no bias, as every UMT5 projection)."""

    def __init__(self, in_features: int, out_features: int, *, axes: Axes, rngs: nnx.Rngs, param_dtype):
        self.kernel = param(rngs.params(), nnx.initializers.lecun_normal(), (in_features, out_features),
                            param_dtype, axes)

    def __call__(self, x: jax.Array, dtype) -> jax.Array:
        return jnp.dot(x.astype(dtype), self.kernel[...].astype(dtype))


class Norm(nnx.Module):
    def __init__(self, features: int, *, rngs: nnx.Rngs, param_dtype):
        self.scale = param(rngs.params(), nnx.initializers.ones_init(), (features,), param_dtype, ("embed",))


class SelfAttention(nnx.Module):
    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs, param_dtype):
        d, inner = config.d_model, config.inner_dim
        kw = dict(rngs=rngs, param_dtype=param_dtype)
        self.q = Linear(d, inner, axes=("embed", "heads"), **kw)
        self.k = Linear(d, inner, axes=("embed", "heads"), **kw)
        self.v = Linear(d, inner, axes=("embed", "heads"), **kw)
        self.o = Linear(inner, d, axes=("heads", "embed"), **kw)
        self.relative_attention_bias = param(
            rngs.params(), nnx.initializers.normal(1.0), (config.relative_attention_num_buckets, config.num_heads),
            param_dtype, (None, None))
        self.num_heads = config.num_heads

    def __call__(self, x: jax.Array, buckets: jax.Array, key_mask: jax.Array, dtype) -> jax.Array:
        b, l, _ = x.shape
        q, k, v = (proj(x, dtype).reshape(b, l, self.num_heads, -1) for proj in (self.q, self.k, self.v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)  # no 1/sqrt(d)
        bias = jnp.take(self.relative_attention_bias[...].astype(jnp.float32), buckets, axis=0)  # [Lq, Lk, H]
        scores = scores + jnp.transpose(bias, (2, 0, 1))[None]
        scores = jnp.where(key_mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(dtype), v)
        return self.o(out.reshape(b, l, -1), dtype)


class FeedForward(nnx.Module):
    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs, param_dtype):
        d, f = config.d_model, config.d_ff
        kw = dict(rngs=rngs, param_dtype=param_dtype)
        self.gated = config.is_gated_act
        self.act = _ACTIVATIONS[config.activation]
        if self.gated:
            self.wi_0 = Linear(d, f, axes=("embed", "mlp"), **kw)
            self.wi_1 = Linear(d, f, axes=("embed", "mlp"), **kw)
        else:
            self.wi = Linear(d, f, axes=("embed", "mlp"), **kw)
        self.wo = Linear(f, d, axes=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array, dtype) -> jax.Array:
        if self.gated:
            hidden = self.act(self.wi_0(x, dtype)) * self.wi_1(x, dtype)
        else:
            hidden = self.act(self.wi(x, dtype))
        # fp32 like transformers' keep-in-fp32 `wo`: UMT5-XXL's FFN outputs overflow half precision.
        return self.wo(hidden, jnp.float32)


class UMT5Block(nnx.Module):
    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs, param_dtype):
        kw = dict(rngs=rngs, param_dtype=param_dtype)
        self.attn_norm = Norm(config.d_model, **kw)
        self.attn = SelfAttention(config, **kw)
        self.ffn_norm = Norm(config.d_model, **kw)
        self.ffn = FeedForward(config, **kw)
        self.eps = config.layer_norm_epsilon

    def __call__(self, x: jax.Array, buckets: jax.Array, key_mask: jax.Array, dtype) -> jax.Array:
        """x: the fp32 residual stream [B, L, d_model]."""
        x = x + self.attn(rms_norm(x, self.attn_norm.scale[...], self.eps), buckets, key_mask, dtype
                          ).astype(jnp.float32)
        return x + self.ffn(rms_norm(x, self.ffn_norm.scale[...], self.eps), dtype).astype(jnp.float32)


class UMT5Encoder(nnx.Module):
    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        config.check("UMT5Encoder config")
        self.config = config
        self.dtype = dtype
        self.shared = param(rngs.params(), nnx.initializers.normal(1.0), (config.vocab_size, config.d_model),
                            param_dtype, ("vocab", "embed"))

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(block_rngs: nnx.Rngs) -> UMT5Block:
            return UMT5Block(config, rngs=block_rngs, param_dtype=param_dtype)

        self.blocks = make_blocks(rngs)
        self.final_layer_norm = Norm(config.d_model, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, input_ids, attention_mask=None) -> jax.Array:
        """input_ids [B, L] int, attention_mask [B, L] (1 = real token, 0 = padding; None = all real)
        -> last_hidden_state [B, L, d_model] float32 (padding positions included, as transformers)."""
        cfg = self.config
        ids = jnp.asarray(input_ids).astype(jnp.int32)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be [B, L]; got shape {ids.shape}")
        mask = jnp.ones(ids.shape, bool) if attention_mask is None else jnp.asarray(attention_mask) > 0
        key_mask = mask[:, None, None, :]  # [B, 1 (heads), 1 (queries), L]
        length = ids.shape[1]
        buckets = jnp.asarray(relative_position_buckets(
            length, length, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance))
        x = jnp.take(self.shared[...], ids, axis=0).astype(jnp.float32)

        graphdef, stacked = nnx.split(self.blocks)

        def body(carry, layer_state):
            return nnx.merge(graphdef, layer_state)(carry, buckets, key_mask, self.dtype), None

        x, _ = jax.lax.scan(body, x, stacked)
        return rms_norm(x, self.final_layer_norm.scale[...], cfg.layer_norm_epsilon)


# ---------------------------------------------------------------------------------------------------
# Abstract trees and conversion between pure-dict params and models

def abstract_model(config: UMT5Config, param_dtype=jnp.float32, **model_kwargs) -> UMT5Encoder:
    """The encoder with ShapeDtypeStruct leaves (nnx.eval_shape; nothing allocated)."""
    return nnx.eval_shape(lambda: UMT5Encoder(config, rngs=nnx.Rngs(0), param_dtype=param_dtype, **model_kwargs))


def abstract_params(config: UMT5Config, param_dtype=jnp.float32) -> dict:
    """Pure dict of jax.ShapeDtypeStruct with the structure of `params_of(encoder)`."""
    return params_of(abstract_model(config, param_dtype))


def param_logical_axes(config: UMT5Config) -> dict:
    """Pure dict (the params' structure) of logical axis-name tuples; block leaves lead with "layers"."""
    return trees.param_logical_axes(abstract_model(config))


def model_from_params(config: UMT5Config, params: dict, **model_kwargs) -> UMT5Encoder:
    """A UMT5Encoder whose parameters are `params` (arrays used as given), built abstractly first so no
    random initialisation is computed."""
    return trees.model_from_params(abstract_model(config, **model_kwargs), params)

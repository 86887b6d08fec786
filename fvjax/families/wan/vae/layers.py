"""Building blocks of the Wan2.1 VAE in Flax NNX, channels-last ([B, T, H, W, C]) inside.

Causal time handling. Diffusers runs the VAE chunk by chunk (encode: frame 0, then 4 frames at a
time; decode: one latent frame at a time) and every causal conv with a 3-frame kernel keeps the last
two frames of its *input* from the previous chunk ("feature cache"). Here each such conv sees
[cache (2 frames) ‖ chunk] and runs without time padding. A cache starts as two zero frames, which is
exactly Diffusers' front zero padding: on the first chunk Diffusers pads 2 zeros, on the second it
prepends its 1 cached frame and pads 1 zero. The caches are threaded explicitly through `CausalCache`
(taken and replaced in call order), so a chunk is a pure function of (chunk, caches): the chunks after
the first share one compiled program.

3-D convs. `conv_impl="taps"` computes a kt x kh x kw conv as the sum of kt 2-D convs (one per time
tap); `"conv3d"` calls XLA's 3-D convolution. Same numbers up to summation order; on XLA:CPU the
taps are ~10x faster (XLA:CPU's 3-D conv is a slow generic loop), elsewhere cuDNN's 3-D conv is used.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from fvjax.models.platform import target_platform

CACHE_FRAMES = 2  # a 3-frame causal kernel needs the 2 frames before the chunk
CONV_IMPLS = ("auto", "taps", "conv3d")
_HALF = (jnp.bfloat16, jnp.float16)


def resolve_conv_impl(impl: str) -> str:
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}; got {impl!r}")
    if impl == "auto":
        return "taps" if target_platform() == "cpu" else "conv3d"
    return impl


class CausalCache:
    """The causal caches of one chunk: `take` the one left by the previous chunk, `put` the new one,
    in the same call order every chunk. `entries=None` marks the first chunk (nothing cached yet)."""

    def __init__(self, entries: Sequence[jax.Array] | None):
        self.first = entries is None
        self._entries = list(entries) if entries is not None else []
        self._next = 0
        self.updated: list[jax.Array] = []

    def take(self, default) -> jax.Array:
        if self.first:
            return default() if callable(default) else default
        value = self._entries[self._next]
        self._next += 1
        return value

    def put(self, value: jax.Array) -> None:
        self.updated.append(value)


def _param(key, init, shape, param_dtype) -> nnx.Param:
    return nnx.Param(init(key, shape, param_dtype))


def _conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Pointwise(nnx.Module):
    """A 1x1(x1) convolution as a matmul over channels: kernel (Cin, Cout)."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        self.dtype = dtype
        self.kernel = _param(rngs.params(), nnx.initializers.lecun_normal(), (cin, cout), param_dtype)
        self.bias = _param(rngs.params(), nnx.initializers.zeros_init(), (cout,), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        lead = x.shape[:-1]
        y = jnp.dot(x.astype(self.dtype).reshape(-1, x.shape[-1]), self.kernel[...].astype(self.dtype))
        return (y + self.bias[...].astype(self.dtype)).reshape(*lead, -1)


class Conv3d(nnx.Module):
    """A 3-D conv without time padding (the caller prepends the causal context), "same" zero padding in
    space for odd spatial kernels. kernel (kt, kh, kw, Cin, Cout)."""

    def __init__(self, cin: int, cout: int, kernel_size: tuple[int, int, int], *, stride_t: int = 1,
                 rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32, conv_impl: str = "auto"):
        self.dtype = dtype
        self.stride_t = stride_t
        self.conv_impl = resolve_conv_impl(conv_impl)
        self.kernel = _param(rngs.params(), nnx.initializers.lecun_normal(), (*kernel_size, cin, cout), param_dtype)
        self.bias = _param(rngs.params(), nnx.initializers.zeros_init(), (cout,), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, T, H, W, Cin] (context included) -> [B, (T - kt) // stride_t + 1, H, W, Cout]."""
        kernel = self.kernel[...].astype(self.dtype)
        x = x.astype(self.dtype)
        kt, kh, kw = kernel.shape[:3]
        pad = [(kh // 2, kh // 2), (kw // 2, kw // 2)]
        b, t, h, w, c = x.shape
        t_out = (t - kt) // self.stride_t + 1
        if self.conv_impl == "conv3d":
            y = jax.lax.conv_general_dilated(x, kernel, (self.stride_t, 1, 1), [(0, 0)] + pad,
                                             dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
        else:
            y = None
            for i in range(kt):
                frames = jax.lax.slice_in_dim(x, i, i + self.stride_t * (t_out - 1) + 1, self.stride_t, axis=1)
                if kh == kw == 1:  # a time-only kernel: one matmul per tap
                    tap = jnp.dot(frames.reshape(-1, c), kernel[i, 0, 0])
                else:
                    tap = _conv2d(frames.reshape(b * t_out, h, w, c), kernel[i], 1, pad)
                y = tap if y is None else y + tap
            y = y.reshape(b, t_out, h, w, -1)
        return y + self.bias[...].astype(self.dtype)


def causal_conv(conv: Conv3d, x: jax.Array, cache: CausalCache) -> jax.Array:
    """Diffusers' WanCausalConv3d (3-frame kernel) on one chunk, with the cache of the previous chunk."""
    b, _, h, w, c = x.shape
    prev = cache.take(lambda: jnp.zeros((b, CACHE_FRAMES, h, w, c), x.dtype))
    full = jnp.concatenate([prev.astype(x.dtype), x], axis=1)
    cache.put(full[:, -CACHE_FRAMES:])
    return conv(full)


class RMSNorm(nnx.Module):
    """Diffusers' WanRMS_norm over channels: x / max(||x||_2, 1e-12) * sqrt(C) * gamma (no eps in a sqrt;
    the normalisation runs in fp32 for half-precision inputs)."""

    def __init__(self, dim: int, *, param_dtype=jnp.float32):
        self.scale = dim ** 0.5
        self.gamma = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32) if x.dtype in _HALF else x
        norm = jnp.sqrt(jnp.sum(jnp.square(xf), axis=-1, keepdims=True))
        normalized = (xf / jnp.maximum(norm, 1e-12)).astype(x.dtype)
        return normalized * self.scale * self.gamma[...].astype(x.dtype)


class ResidualBlock(nnx.Module):
    """norm1 -> SiLU -> causal conv1 -> norm2 -> SiLU -> (dropout: inference only) -> causal conv2, + shortcut
    (a 1x1x1 conv when the width changes)."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 conv_impl: str = "auto"):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.norm1 = RMSNorm(cin, param_dtype=param_dtype)
        self.conv1 = Conv3d(cin, cout, (3, 3, 3), conv_impl=conv_impl, **kw)
        self.norm2 = RMSNorm(cout, param_dtype=param_dtype)
        self.conv2 = Conv3d(cout, cout, (3, 3, 3), conv_impl=conv_impl, **kw)
        self.conv_shortcut = Pointwise(cin, cout, **kw) if cin != cout else None

    def __call__(self, x: jax.Array, cache: CausalCache) -> jax.Array:
        h = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        x = causal_conv(self.conv1, jax.nn.silu(self.norm1(x)), cache)
        x = causal_conv(self.conv2, jax.nn.silu(self.norm2(x)), cache)
        return x + h


class AttentionBlock(nnx.Module):
    """Single-head self-attention over the H*W positions of each frame (no mixing across time)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.norm = RMSNorm(dim, param_dtype=param_dtype)
        self.to_qkv = Pointwise(dim, 3 * dim, **kw)
        self.proj = Pointwise(dim, dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b * t, h * w, 3, c)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # channel thirds, in Diffusers' order
        logits = jnp.einsum("nqc,nkc->nqk", q, k, preferred_element_type=jnp.float32) / c ** 0.5
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("nqk,nkc->nqc", weights, v)
        return self.proj(out).reshape(b, t, h, w, c) + x


class Resample(nnx.Module):
    """Diffusers' WanResample: spatial x2 down (pad right/bottom by 1, 3x3 conv stride 2) or up (nearest x2,
    3x3 conv to dim // 2 channels), optionally with a causal time conv (down: stride 2 over [last frame of
    the previous chunk ‖ chunk]; up: doubles the frames)."""

    def __init__(self, dim: int, mode: str, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 conv_impl: str = "auto"):
        if mode not in ("downsample2d", "downsample3d", "upsample2d", "upsample3d"):
            raise ValueError(f"unknown resample mode {mode!r}")
        self.mode = mode
        self.dtype = dtype
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        cout = dim // 2 if mode.startswith("up") else dim
        self.resample = _Conv2d(dim, cout, **kw)
        time_conv = None
        if mode == "downsample3d":
            time_conv = Conv3d(dim, dim, (3, 1, 1), stride_t=2, conv_impl=conv_impl, **kw)
        elif mode == "upsample3d":
            time_conv = Conv3d(dim, 2 * dim, (3, 1, 1), conv_impl=conv_impl, **kw)
        self.time_conv = time_conv  # assigned once: NNX fixes an attribute's data/static status on first set

    def __call__(self, x: jax.Array, cache: CausalCache) -> jax.Array:
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        b, t, h, w, c = x.shape
        frames = x.reshape(b * t, h, w, c)
        if self.mode.startswith("up"):
            frames = jnp.repeat(jnp.repeat(frames, 2, axis=1), 2, axis=2)  # nearest-exact at scale 2
            y = self.resample(frames, stride=1, padding=[(1, 1), (1, 1)])
        else:
            y = self.resample(frames, stride=2, padding=[(0, 1), (0, 1)])
        x = y.reshape(b, t, *y.shape[1:])
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: jax.Array, cache: CausalCache) -> jax.Array:
        if cache.first:
            # Diffusers marks the slot "Rep" and passes the first latent frame through (1 frame -> 1). The
            # next chunk then runs time_conv with zero padding and caches [zeros, frame]: a zero cache.
            cache.put(jnp.zeros((x.shape[0], CACHE_FRAMES, *x.shape[2:]), x.dtype))
            return x
        y = causal_conv(self.time_conv, x, cache)  # [B, T, H, W, 2C]
        b, t, h, w, c2 = y.shape
        # Channel halves are two consecutive output frames: frame 2i from [:C], 2i+1 from [C:].
        y = y.reshape(b, t, h, w, 2, c2 // 2).transpose(0, 1, 4, 2, 3, 5)
        return y.reshape(b, 2 * t, h, w, c2 // 2)

    def _halve_frames(self, x: jax.Array, cache: CausalCache) -> jax.Array:
        if cache.first:
            # The first chunk's single frame passes through; it is the context of the next chunk.
            cache.put(x[:, -1:])
            return x
        prev = cache.take(None)
        cache.put(x[:, -1:])
        return self.time_conv(jnp.concatenate([prev.astype(x.dtype), x], axis=1))


class _Conv2d(nnx.Module):
    """A 3x3 2-D conv applied to every frame; kernel (3, 3, Cin, Cout)."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        self.dtype = dtype
        self.kernel = _param(rngs.params(), nnx.initializers.lecun_normal(), (3, 3, cin, cout), param_dtype)
        self.bias = _param(rngs.params(), nnx.initializers.zeros_init(), (cout,), param_dtype)

    def __call__(self, x: jax.Array, *, stride: int, padding) -> jax.Array:
        y = _conv2d(x.astype(self.dtype), self.kernel[...].astype(self.dtype), stride, padding)
        return y + self.bias[...].astype(self.dtype)


class MidBlock(nnx.Module):
    """Residual block, attention, residual block (at the narrowest resolution)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 conv_impl: str = "auto"):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.resnets = nnx.List([ResidualBlock(dim, dim, conv_impl=conv_impl, **kw) for _ in range(2)])
        self.attentions = nnx.List([AttentionBlock(dim, **kw)])

    def __call__(self, x: jax.Array, cache: CausalCache) -> jax.Array:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)

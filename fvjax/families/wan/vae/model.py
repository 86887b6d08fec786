"""The Wan2.1 video VAE (Diffusers `AutoencoderKLWan`) in Flax NNX.

    vae = WanVAE(config, rngs=nnx.Rngs(0))               # or fvjax.families.wan.vae.load_vae(path)
    mean, logvar = vae.encode(video)   # [B, 3, 1+4k, H, W] in [-1, 1] -> 2 x [B, z_dim, 1+k, H/8, W/8]
    video = vae.decode(latents)        # un-normalised [B, z_dim, 1+k, h, w] -> [B, 3, 1+4k, 8h, 8w] in [-1, 1]

Chunked like Diffusers, for memory: encode runs frame 0, then chunks of 4 frames; decode runs one
latent frame at a time. A chunk is a pure function of (chunk, causal caches) (layers.py), so only one
chunk's activations are live at a time (a full 81-frame 480x832 decode never holds every frame of
every layer). Called eagerly, each chunk runs one of two jitted programs (first chunk, later chunk)
compiled once per spatial size; traced inside jax.jit / nnx.jit, the later chunks run under a
lax.scan. Numbers equal Diffusers' chunked computation up to float summation order. Outputs are
float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fvjax.families.wan.vae.config import ENCODE_CHUNK_FRAMES, WanVAEConfig
from fvjax.models import params as trees
from fvjax.families.wan.vae.layers import (CausalCache, Conv3d, MidBlock, Pointwise, Resample, ResidualBlock,
                                           RMSNorm, causal_conv)

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # Diffusers' DiagonalGaussianDistribution clamp


class Encoder3d(nnx.Module):
    def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 conv_impl: str = "auto"):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        dims = config.encoder_dims
        self.conv_in = Conv3d(config.in_channels, dims[0], (3, 3, 3), conv_impl=conv_impl, **kw)
        layers = []
        last = len(config.dim_mult) - 1
        for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(config.num_res_blocks):
                layers.append(ResidualBlock(cin, cout, conv_impl=conv_impl, **kw))
                cin = cout
            if level != last:
                mode = "downsample3d" if config.temperal_downsample[level] else "downsample2d"
                layers.append(Resample(cout, mode, conv_impl=conv_impl, **kw))
        self.down_blocks = nnx.List(layers)  # one flat list, indexed as Diffusers' down_blocks
        self.mid_block = MidBlock(dims[-1], conv_impl=conv_impl, **kw)
        self.norm_out = RMSNorm(dims[-1], param_dtype=param_dtype)
        self.conv_out = Conv3d(dims[-1], 2 * config.z_dim, (3, 3, 3), conv_impl=conv_impl, **kw)

    def __call__(self, x: jax.Array, cache: CausalCache) -> jax.Array:
        x = causal_conv(self.conv_in, x, cache)
        for layer in self.down_blocks:
            x = layer(x, cache)
        x = self.mid_block(x, cache)
        return causal_conv(self.conv_out, jax.nn.silu(self.norm_out(x)), cache)


class UpBlock(nnx.Module):
    """num_res_blocks + 1 residual blocks, then an optional resample (Diffusers' `upsamplers.0`)."""

    def __init__(self, cin: int, cout: int, num_res_blocks: int, upsample_mode: str | None, *,
                 rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32, conv_impl: str = "auto"):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype, conv_impl=conv_impl)
        self.resnets = nnx.List([ResidualBlock(cin if i == 0 else cout, cout, **kw)
                                 for i in range(num_res_blocks + 1)])
        self.upsamplers = nnx.List([Resample(cout, upsample_mode, **kw)]) if upsample_mode else None

    def __call__(self, x: jax.Array, cache: CausalCache) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache)
        return x


class Decoder3d(nnx.Module):
    def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 conv_impl: str = "auto"):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype, conv_impl=conv_impl)
        dims = config.decoder_dims
        up_temporal = config.temperal_upsample
        last = len(config.dim_mult) - 1
        self.conv_in = Conv3d(config.z_dim, dims[0], (3, 3, 3), **kw)
        self.mid_block = MidBlock(dims[0], **kw)
        blocks = []
        for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if level > 0:
                cin //= 2  # the previous block's resample conv halved the width
            mode = None if level == last else ("upsample3d" if up_temporal[level] else "upsample2d")
            blocks.append(UpBlock(cin, cout, config.num_res_blocks, mode, **kw))
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1], param_dtype=param_dtype)
        self.conv_out = Conv3d(dims[-1], config.out_channels, (3, 3, 3), **kw)

    def __call__(self, x: jax.Array, cache: CausalCache) -> jax.Array:
        x = causal_conv(self.conv_in, x, cache)
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return causal_conv(self.conv_out, jax.nn.silu(self.norm_out(x)), cache)


def _chunk_step(graphdef, state, chunk: jax.Array, caches: list | None) -> tuple[jax.Array, list]:
    """One chunk through the encoder or decoder: (output, updated caches). caches=None: the first chunk."""
    cache = CausalCache(caches)
    out = nnx.merge(graphdef, state)(chunk, cache)
    return out, cache.updated


# The incoming caches are dead once the chunk ran (the full-size decoder's are 3.5 GiB in fp32): donated.
_jitted_chunk_step = jax.jit(_chunk_step, static_argnames=("graphdef",), donate_argnames=("caches",))


def _is_traced(*trees) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def _run_chunks(module: nnx.Module, first: jax.Array, rest: jax.Array | None) -> jax.Array:
    """`module(chunk, cache)` on the first chunk, then on each chunk of `rest` ([N, B, T, H, W, C]) in
    order, carrying the causal caches; outputs concatenated in time.

    Eagerly, each chunk runs one of two jitted programs (first chunk, later chunk), compiled once per
    spatial size whatever the video length. Under an outer trace (jax.jit / nnx.jit of encode or
    decode) the later chunks run under a lax.scan, so the traced program holds two copies of the
    network, not one per chunk. Either way only one chunk's activations are live at a time."""
    graphdef, state = nnx.split(module)
    if _is_traced(first, rest, state):
        out0, caches = _chunk_step(graphdef, state, first, None)
        if rest is None:
            return out0

        def body(carry, chunk):
            out, carry = _chunk_step(graphdef, state, chunk, carry)
            return carry, out

        _, outs = jax.lax.scan(body, caches, rest)  # [N, B, T_out, H, W, C]
        outs = jnp.moveaxis(outs, 0, 1)
        outs = outs.reshape(outs.shape[0], -1, *outs.shape[3:])
    else:
        out0, caches = _jitted_chunk_step(graphdef, state, first, None)
        if rest is None:
            return out0
        pieces = []
        for i in range(rest.shape[0]):
            out, caches = _jitted_chunk_step(graphdef, state, rest[i], caches)
            pieces.append(out)
        outs = jnp.concatenate(pieces, axis=1)
    return jnp.concatenate([out0, outs], axis=1)


class WanVAE(nnx.Module):
    def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 conv_impl: str = "auto"):
        config.check("WanVAE config")
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.config = config
        self.dtype = dtype
        self.encoder = Encoder3d(config, conv_impl=conv_impl, **kw)
        self.quant_conv = Pointwise(2 * config.z_dim, 2 * config.z_dim, **kw)
        self.post_quant_conv = Pointwise(config.z_dim, config.z_dim, **kw)
        self.decoder = Decoder3d(config, conv_impl=conv_impl, **kw)

    def encode(self, video) -> tuple[jax.Array, jax.Array]:
        """video [B, C_in, 1+4k, H, W] in [-1, 1] -> (mean, logvar) [B, z_dim, 1+k, H/8, W/8] each, float32;
        logvar clamped to [-30, 20] as Diffusers' posterior does."""
        cfg = self.config
        video = jnp.asarray(video)
        if video.ndim != 5 or video.shape[1] != cfg.in_channels:
            raise ValueError(f"video must be [B, {cfg.in_channels}, F, H, W]; got shape {video.shape}")
        b, _, f, h, w = video.shape
        if (f - 1) % ENCODE_CHUNK_FRAMES:
            raise ValueError(f"the number of frames must be 1 + 4k; got {f}")
        s = cfg.spatial_scale
        if h % s or w % s:
            raise ValueError(f"height and width must be multiples of {s}; got {h}x{w}")
        x = jnp.transpose(video, (0, 2, 3, 4, 1)).astype(self.dtype)  # [B, F, H, W, C]
        # Frame 0 alone, then 4 frames at a time (Diffusers' chunks).
        k = (f - 1) // ENCODE_CHUNK_FRAMES
        rest = jnp.moveaxis(x[:, 1:].reshape(b, k, ENCODE_CHUNK_FRAMES, h, w, -1), 1, 0) if k else None
        moments = self.quant_conv(_run_chunks(self.encoder, x[:, :1], rest)).astype(jnp.float32)
        moments = jnp.transpose(moments, (0, 4, 1, 2, 3))  # [B, 2z, T, h, w]
        mean, logvar = jnp.split(moments, 2, axis=1)
        return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, latents) -> jax.Array:
        """Un-normalised latents [B, z_dim, T, h, w] -> video [B, C_out, 1 + 4(T-1), 8h, 8w], float32,
        clamped to [-1, 1]."""
        cfg = self.config
        z = jnp.asarray(latents)
        if z.ndim != 5 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"latents must be [B, {cfg.z_dim}, T, h, w]; got shape {z.shape}")
        x = self.post_quant_conv(jnp.transpose(z, (0, 2, 3, 4, 1)).astype(self.dtype))  # [B, T, h, w, z]
        rest = jnp.moveaxis(x[:, 1:, None], 1, 0) if x.shape[1] > 1 else None  # [T-1, B, 1, h, w, z]
        out = _run_chunks(self.decoder, x[:, :1], rest)  # one latent frame per chunk
        out = jnp.clip(out.astype(jnp.float32), -1.0, 1.0)
        return jnp.transpose(out, (0, 4, 1, 2, 3))

    def decode_frames(self, latents, caches: list | None = None) -> tuple[jax.Array, list]:
        """Streaming decode: the next latent frames [B, z_dim, t, h, w] of a video, continuing from the
        causal caches the previous call returned (None: the video starts here) -> (their pixel frames
        [B, C_out, 1 + 4(t-1) or 4t, 8h, 8w] float32 in [-1, 1], the caches to pass next). The frames of a
        video decoded this way, call after call, are `decode`'s (the same per-frame programs)."""
        cfg = self.config
        z = jnp.asarray(latents)
        if z.ndim != 5 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"latents must be [B, {cfg.z_dim}, t, h, w]; got shape {z.shape}")
        x = self.post_quant_conv(jnp.transpose(z, (0, 2, 3, 4, 1)).astype(self.dtype))  # [B, t, h, w, z]
        graphdef, state = nnx.split(self.decoder)
        pieces = []
        for i in range(x.shape[1]):
            out, caches = _jitted_chunk_step(graphdef, state, x[:, i:i + 1], caches)
            pieces.append(out)
        out = jnp.clip(jnp.concatenate(pieces, axis=1).astype(jnp.float32), -1.0, 1.0)
        return jnp.transpose(out, (0, 4, 1, 2, 3)), caches


# ---------------------------------------------------------------------------------------------------
# Abstract trees and conversion between pure-dict params and models

def abstract_vae(config: WanVAEConfig, param_dtype=jnp.float32, **model_kwargs) -> WanVAE:
    """The VAE with ShapeDtypeStruct leaves (nnx.eval_shape; nothing allocated)."""
    return nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0), param_dtype=param_dtype, **model_kwargs))


def abstract_vae_params(config: WanVAEConfig, param_dtype=jnp.float32) -> dict:
    """Pure dict of jax.ShapeDtypeStruct with the structure of `vae_params_of(model)`."""
    return trees.params_of(abstract_vae(config, param_dtype))


vae_params_of = trees.params_of
count_vae_params = trees.count_params   # 126,892,531 for the Wan2.1 VAE


def vae_from_params(config: WanVAEConfig, params: dict, **model_kwargs) -> WanVAE:
    """A WanVAE whose parameters are `params` (pure dict), built abstractly first (no random init)."""
    return trees.model_from_params(abstract_vae(config, **model_kwargs), params)

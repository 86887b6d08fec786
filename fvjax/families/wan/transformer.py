"""The Wan2.1 T2V diffusion transformer (Diffusers `WanTransformer3DModel`) in Flax NNX.

    model = WanTransformer(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, remat_policy="full")
    out = model(latents [B, C, F, H, W], timestep [B] or [B, F'], text [B, Lt, text_dim])  # [B, Cout, F, H, W]

Blocks are created stacked (nnx.vmap: every block leaf has a leading [num_layers] axis) and run under
one `jax.lax.scan`, so the block is compiled once; `remat_policy` (fvjax/models/remat.py) checkpoints it.
`scan_unroll` (int >= 1, or True = all layers) unrolls that scan: the output is the same, compile time
grows with the unrolled layers, and the backward loses the loop's bookkeeping (stacked residual
buffers filled by dynamic-update-slices, per-iteration copies): on XLA:CPU a full unroll makes the
fwd+bwd step ~10-15% faster (benchmarks/README.md, DiT section). Default 1 (a rolled loop).

Precision. Parameters are stored in `param_dtype` (fp32 master weights) and cast to the compute
`dtype` at use. LayerNorms, modulation, gated residual adds and the whole time path are fp32
(Diffusers keeps them fp32 too). The residual stream between sublayers is kept in `residual_dtype`,
default = `dtype`: that is Diffusers' (and so FastVideo's) behaviour — each gated add is computed in
fp32 and cast back — and it halves the memory of the per-layer activations saved by the scan under
remat. Pass `residual_dtype=jnp.float32` for the original Wan's fp32 residual stream.

Tokens: patch features are ordered (C, pt, ph, pw) (the Conv3d weight flattened), tokens are
frame-major (index = f*H'*W' + h*W' + w), output features (pt, ph, pw, Cout) with Cout fastest.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fvjax.families.wan.block import ACT_AXES, WanBlock, modulate
from fvjax.families.wan.config import WanConfig
from fvjax.families.wan.embeddings import ConditionEmbedder
from fvjax.models.layers import Dense, layer_norm_fp32
from fvjax.families.wan.rope import rope_cos_sin
from fvjax.models import params as trees
from fvjax.models.params import count_params, params_of  # noqa: F401  (part of this module's API)
from fvjax.models.remat import check_policy, remat
from fvjax.sharding import constrain

TEXT_AXES = ("act_batch", "act_text", "act_embed")


def patchify(x: jax.Array, patch_size: tuple[int, int, int]) -> jax.Array:
    """[B, C, F, H, W] -> tokens [B, F'*H'*W', C*pt*ph*pw] with feature order (C, pt, ph, pw)."""
    b, c, f, h, w = x.shape
    pt, ph, pw = patch_size
    x = x.reshape(b, c, f // pt, pt, h // ph, ph, w // pw, pw)
    x = jnp.transpose(x, (0, 2, 4, 6, 1, 3, 5, 7))
    return x.reshape(b, (f // pt) * (h // ph) * (w // pw), c * pt * ph * pw)


def unpatchify(tokens: jax.Array, grid: tuple[int, int, int], patch_size: tuple[int, int, int]) -> jax.Array:
    """tokens [B, L, pt*ph*pw*Cout] (Cout fastest) -> [B, Cout, F, H, W]."""
    b = tokens.shape[0]
    (fp, hp, wp), (pt, ph, pw) = grid, patch_size
    x = tokens.reshape(b, fp, hp, wp, pt, ph, pw, -1)
    x = jnp.transpose(x, (0, 7, 1, 4, 2, 5, 3, 6))
    return x.reshape(b, x.shape[1], fp * pt, hp * ph, wp * pw)


class WanTransformer(nnx.Module):
    def __init__(self, config: WanConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 remat_policy: str = "none", attention_backend: str = "auto", residual_dtype=None,
                 scan_unroll: int | bool = 1):
        config.check("WanTransformer config")
        check_policy(remat_policy)
        if not (isinstance(scan_unroll, bool) or (isinstance(scan_unroll, int) and scan_unroll >= 1)):
            raise ValueError(f"scan_unroll must be an int >= 1 or a bool; got {scan_unroll!r}")
        d = config.inner_dim
        self.config = config
        self.dtype = dtype
        self.residual_dtype = dtype if residual_dtype is None else residual_dtype
        self.remat_policy = remat_policy
        self.scan_unroll = scan_unroll
        kw = dict(param_dtype=param_dtype, dtype=dtype)

        self.patch_embedding = Dense(config.in_channels * config.patch_features, d, axes=("patch", "embed"),
                                     rngs=rngs, **kw)
        self.condition_embedder = ConditionEmbedder(config, rngs=rngs, **kw)

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(block_rngs: nnx.Rngs) -> WanBlock:
            return WanBlock(config, rngs=block_rngs, attention_backend=attention_backend, **kw)

        self.blocks = make_blocks(rngs)
        self.proj_out = Dense(d, config.patch_features * config.out_channels, axes=("embed", "patch_out"),
                              rngs=rngs, **kw)
        table = jax.random.normal(rngs.params(), (1, 2, d), jnp.float32) / d ** 0.5
        self.scale_shift_table = nnx.Param(table.astype(param_dtype), logical_axes=(None, "mod", "embed"))

    def _grid(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        if len(shape) != 5:
            raise ValueError(f"hidden_states must be [B, C, F, H, W]; got shape {shape}")
        _, c, f, h, w = shape
        if c != self.config.in_channels:
            raise ValueError(f"hidden_states has {c} channels; the model expects {self.config.in_channels}")
        pt, ph, pw = self.config.patch_size
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent (F, H, W) = {(f, h, w)} must be divisible by patch_size {(pt, ph, pw)}")
        return f // pt, h // ph, w // pw

    def __call__(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any) -> jax.Array:
        """[B, C, F, H, W], timestep [B] (or per-frame [B, F/pt]), text [B, Lt, text_dim] -> [B, Cout, F, H, W]."""
        tokens, temb, modulation, context, grid = self._embed(hidden_states, timestep, encoder_hidden_states)
        cos, sin = rope_cos_sin(self.config.attention_head_dim, grid, max_positions=self.config.rope_max_seq_len)
        cos, sin = constrain(cos, ("act_seq", None)), constrain(sin, ("act_seq", None))
        tokens = self._run_blocks(tokens, context, modulation, (cos, sin))
        return self._head(tokens, temb, grid)

    def _embed(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any):
        """Patch tokens [B, L, D], temb [B, Ft, D], modulation [B, Ft, 6, D], text tokens and the token grid."""
        x = jnp.asarray(hidden_states)
        timestep = jnp.asarray(timestep)
        text = jnp.asarray(encoder_hidden_states)
        grid = self._grid(x.shape)
        if timestep.ndim == 0:
            timestep = jnp.broadcast_to(timestep, (x.shape[0],))
        if timestep.ndim == 2 and timestep.shape[1] not in (1, grid[0]):
            raise ValueError(f"per-frame timestep has {timestep.shape[1]} frames; the latent has {grid[0]} "
                             "(after temporal patching)")

        temb, modulation, context = self.condition_embedder(timestep, text)
        return self._tokens(x), temb, modulation, constrain(context, TEXT_AXES), grid

    def _tokens(self, x: jax.Array) -> jax.Array:
        """Patch tokens [B, L, D] of a latent [B, C, F, H, W] (already checked by _grid)."""
        tokens = self.patch_embedding(patchify(x, self.config.patch_size).astype(self.dtype))
        return constrain(tokens.astype(self.residual_dtype), ACT_AXES)

    def _head(self, tokens: jax.Array, temb: jax.Array, grid: tuple[int, int, int]) -> jax.Array:
        cfg = self.config
        head = self.scale_shift_table[...].astype(jnp.float32)[:, None] + temb[:, :, None, :]  # [B, Ft, 2, D]
        normed = modulate(layer_norm_fp32(tokens, cfg.eps), head[:, :, 0], head[:, :, 1]).astype(self.dtype)
        return unpatchify(self.proj_out(normed), grid, cfg.patch_size)

    def _run_blocks(self, tokens, context, modulation, rope) -> jax.Array:
        graphdef, stacked = nnx.split(self.blocks)

        def body(carry, layer_state):
            block = nnx.merge(graphdef, layer_state)
            return block(carry, context, modulation, rope), None

        tokens, _ = jax.lax.scan(remat(body, self.remat_policy), tokens, stacked, unroll=self.scan_unroll)
        return tokens


# ---------------------------------------------------------------------------------------------------
# Abstract trees and conversion between pure-dict params and models (fvjax/models/params.py)

def abstract_model(config: WanConfig, param_dtype=jnp.float32, **model_kwargs) -> WanTransformer:
    """The model with ShapeDtypeStruct leaves (nnx.eval_shape; nothing allocated)."""
    return nnx.eval_shape(lambda: WanTransformer(config, rngs=nnx.Rngs(0), param_dtype=param_dtype,
                                                 **model_kwargs))


def abstract_params(config: WanConfig, param_dtype=jnp.float32) -> dict:
    """Pure dict of jax.ShapeDtypeStruct with the structure of `params_of(model)`."""
    return params_of(abstract_model(config, param_dtype))


def param_logical_axes(config: WanConfig) -> dict:
    """Pure dict (the params' structure) of logical axis-name tuples; block leaves lead with "layers"."""
    return trees.param_logical_axes(abstract_model(config))


def model_from_params(config: WanConfig, params: dict, **model_kwargs) -> WanTransformer:
    """A WanTransformer whose parameters are `params` (a pure dict as from `params_of`), built
    abstractly first so no random initialisation is computed. Arrays are used as given."""
    return trees.model_from_params(abstract_model(config, **model_kwargs), params)

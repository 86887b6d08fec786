"""Diffusers `WanTransformer3DModel` state-dict keys <-> fvjax parameter tree paths, with layout transforms.

One `TensorKey` (fvjax/models/keymap.py) per Diffusers tensor, listed in Diffusers' `state_dict()` order
(a module's own parameters before its submodules: that is why `scale_shift_table` comes first). Block
tensors map to a row of a leaf stacked over layers (the scanned blocks).

Transforms: a Linear `weight` (out, in) becomes a `kernel` (in, out); the patch-embedding Conv3d
weight (D, C, pt, ph, pw) becomes a Dense kernel (C*pt*ph*pw, D) with features ordered (C, pt, ph, pw);
everything else is copied as is.
"""
from __future__ import annotations

from typing import Iterator

from fvjax.families.wan.config import WanConfig
from fvjax.models import keymap
from fvjax.models.keymap import PATCH, TensorKey, linear as _linear

def _attention(prefix: str, name: str, layer: int, dim: int) -> Iterator[TensorKey]:
    # Wan's cross-attention keys/values read the text tokens after the text embedder has projected
    # them to the model width, so every projection is (D, D).
    for proj in ("to_q", "to_k", "to_v"):
        yield from _linear(f"{prefix}.{name}.{proj}", ("blocks", name, proj), layer, dim, dim)
    yield from _linear(f"{prefix}.{name}.to_out.0", ("blocks", name, "to_out"), layer, dim, dim)
    for norm in ("norm_q", "norm_k"):
        yield TensorKey(f"{prefix}.{name}.{norm}.weight", ("blocks", name, norm, "scale"), layer, (dim,), (dim,))


def _block(config: WanConfig, i: int) -> Iterator[TensorKey]:
    d, prefix = config.inner_dim, f"blocks.{i}"
    yield TensorKey(f"{prefix}.scale_shift_table", ("blocks", "scale_shift_table"), i, (1, 6, d), (1, 6, d))
    yield from _attention(prefix, "attn1", i, d)
    yield from _attention(prefix, "attn2", i, d)
    if config.cross_attn_norm:  # otherwise norm2 is an Identity with no parameters
        yield TensorKey(f"{prefix}.norm2.weight", ("blocks", "norm2", "scale"), i, (d,), (d,))
        yield TensorKey(f"{prefix}.norm2.bias", ("blocks", "norm2", "bias"), i, (d,), (d,))
    yield from _linear(f"{prefix}.ffn.net.0.proj", ("blocks", "ffn", "proj_in"), i, d, config.ffn_dim)
    yield from _linear(f"{prefix}.ffn.net.2", ("blocks", "ffn", "proj_out"), i, config.ffn_dim, d)


def tensor_keys(config: WanConfig) -> list[TensorKey]:
    """Every Diffusers key of the T2V transformer for `config`, in Diffusers' state_dict order."""
    d, c = config.inner_dim, config.in_channels
    pt, ph, pw = config.patch_size
    p = config.patch_features
    keys = [TensorKey("scale_shift_table", ("scale_shift_table",), None, (1, 2, d), (1, 2, d)),
            TensorKey("patch_embedding.weight", ("patch_embedding", "kernel"), None,
                      (d, c, pt, ph, pw), (c * p, d), PATCH),
            TensorKey("patch_embedding.bias", ("patch_embedding", "bias"), None, (d,), (d,))]
    ce = "condition_embedder"
    keys += _linear(f"{ce}.time_embedder.linear_1", (ce, "time_embedder", "linear_1"), None, config.freq_dim, d)
    keys += _linear(f"{ce}.time_embedder.linear_2", (ce, "time_embedder", "linear_2"), None, d, d)
    keys += _linear(f"{ce}.time_proj", (ce, "time_proj"), None, d, 6 * d)
    keys += _linear(f"{ce}.text_embedder.linear_1", (ce, "text_embedder", "linear_1"), None, config.text_dim, d)
    keys += _linear(f"{ce}.text_embedder.linear_2", (ce, "text_embedder", "linear_2"), None, d, d)
    for i in range(config.num_layers):
        keys += _block(config, i)
    keys += _linear("proj_out", ("proj_out",), None, d, p * config.out_channels)
    return keys


def leaf_shapes(config: WanConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Full fvjax leaf shapes (stacked block leaves get their leading num_layers axis), in key-map order."""
    return keymap.leaf_shapes(tensor_keys(config))

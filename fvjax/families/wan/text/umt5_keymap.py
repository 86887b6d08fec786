"""transformers `UMT5EncoderModel` state-dict keys <-> fvjax UMT5Encoder parameter paths.

One `TensorKey` (fvjax/models/keymap.py; its `diffusers_key` holds the transformers key here) per
stored tensor, in transformers' `state_dict()` order. Block tensors fill one row of a leaf stacked over
layers. Linear weights (out, in) become kernels (in, out); embeddings and norm weights are copied.

The token embedding is stored as `shared.weight`; `encoder.embed_tokens.weight` is tied to it
(transformers' save_pretrained drops the tied copy, some exports keep it): either name fills `shared`,
and `shared.weight` wins when both are present.
"""
from __future__ import annotations

from typing import Iterator

from fvjax.models import keymap
from fvjax.models.keymap import COPY, TensorKey, linear
from fvjax.families.wan.text.umt5_config import UMT5Config

EMBEDDING_KEY = "shared.weight"
TIED_EMBEDDING_KEY = "encoder.embed_tokens.weight"


def _linear(key: str, path: tuple[str, ...], layer: int, d_in: int, d_out: int) -> TensorKey:
    return linear(key, path, layer, d_in, d_out, bias=False)[0]


def _block(config: UMT5Config, i: int) -> Iterator[TensorKey]:
    d, inner, f = config.d_model, config.inner_dim, config.d_ff
    attn = f"encoder.block.{i}.layer.0.SelfAttention"
    for proj in ("q", "k", "v"):
        yield _linear(f"{attn}.{proj}", ("blocks", "attn", proj), i, d, inner)
    yield _linear(f"{attn}.o", ("blocks", "attn", "o"), i, inner, d)
    table = (config.relative_attention_num_buckets, config.num_heads)
    yield TensorKey(f"{attn}.relative_attention_bias.weight", ("blocks", "attn", "relative_attention_bias"),
                    i, table, table, COPY)
    yield TensorKey(f"encoder.block.{i}.layer.0.layer_norm.weight", ("blocks", "attn_norm", "scale"), i,
                    (d,), (d,), COPY)
    ffn = f"encoder.block.{i}.layer.1.DenseReluDense"
    for name in (("wi_0", "wi_1") if config.is_gated_act else ("wi",)):
        yield _linear(f"{ffn}.{name}", ("blocks", "ffn", name), i, d, f)
    yield _linear(f"{ffn}.wo", ("blocks", "ffn", "wo"), i, f, d)
    yield TensorKey(f"encoder.block.{i}.layer.1.layer_norm.weight", ("blocks", "ffn_norm", "scale"), i,
                    (d,), (d,), COPY)


def tensor_keys(config: UMT5Config) -> list[TensorKey]:
    """Every stored tensor of a UMT5EncoderModel with `config` (the tied embedding copy excluded)."""
    table = (config.vocab_size, config.d_model)
    keys = [TensorKey(EMBEDDING_KEY, ("shared",), None, table, table, COPY)]
    for i in range(config.num_layers):
        keys += _block(config, i)
    keys.append(TensorKey("encoder.final_layer_norm.weight", ("final_layer_norm", "scale"), None,
                          (config.d_model,), (config.d_model,), COPY))
    return keys


def keys_by_leaf(config: UMT5Config) -> dict[tuple[str, ...], list[TensorKey]]:
    return keymap.keys_by_leaf(tensor_keys(config))

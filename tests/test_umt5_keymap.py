"""UMT5 key map and loader: round trip through transformers, full-size key coverage and parameter count
against transformers' own (meta-device) UMT5EncoderModel, config parsing, and one-line loader errors."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file

from fvjax.errors import UserError
from fvjax.families.wan.text import PRESETS, UMT5Config, UMT5Encoder, abstract_params, count_params, load_umt5_params, save_umt5
from fvjax.families.wan.text.umt5 import params_of
from fvjax.families.wan.text.umt5_keymap import TIED_EMBEDDING_KEY, tensor_keys
from text_utils import tiny_hf_encoder

# The fields of Wan2.1's text_encoder/config.json (google/umt5-xxl's encoder saved by transformers 4.x).
WAN_TEXT_ENCODER_CONFIG = {
    "_name_or_path": "google/umt5-xxl", "architectures": ["UMT5EncoderModel"], "classifier_dropout": 0.0,
    "d_ff": 10240, "d_kv": 64, "d_model": 4096, "decoder_start_token_id": 0, "dense_act_fn": "gelu_new",
    "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0,
    "is_encoder_decoder": True, "is_gated_act": True, "layer_norm_epsilon": 1e-06, "model_type": "umt5",
    "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24, "output_past": True, "pad_token_id": 0,
    "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32, "scalable_attention": True,
    "tie_word_embeddings": False, "tokenizer_class": "T5Tokenizer", "torch_dtype": "bfloat16",
    "transformers_version": "4.48.0.dev0", "use_cache": True, "vocab_size": 256384,
}


def hf_config(config: UMT5Config):
    from transformers import UMT5Config as HFConfig

    return HFConfig(**{k: v for k, v in config.to_hf_config().items() if k != "architectures"})


def test_full_size_keys_and_parameter_count_match_transformers():
    from transformers import UMT5EncoderModel

    config = UMT5Config.from_hf_config(WAN_TEXT_ENCODER_CONFIG, where="text_encoder/config.json")
    assert config == PRESETS["umt5-xxl"]
    with torch.device("meta"):
        model = UMT5EncoderModel(hf_config(config))
    ours = {k.diffusers_key: k.torch_shape for k in tensor_keys(config)}
    theirs = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert set(theirs) == set(ours) | {TIED_EMBEDDING_KEY}  # the tied copy is the same tensor as shared.weight
    assert all(theirs[name] == shape for name, shape in ours.items())
    assert len(ours) == 242  # the key count of Wan2.1's text_encoder/model.safetensors.index.json
    n = sum(p.numel() for p in model.parameters())  # tied parameters counted once
    assert count_params(abstract_params(config)) == n == 5_680_910_336
    # Every fvjax leaf is filled: the key map's leaf shapes are the abstract model's.
    abstract = jax.tree_util.tree_leaves_with_path(abstract_params(config))
    assert len(abstract) == len({k.path for k in tensor_keys(config)})


def test_round_trip_through_transformers(tmp_path):
    config = PRESETS["tiny"]
    params = jax.tree_util.tree_map(np.asarray, params_of(UMT5Encoder(config, rngs=nnx.Rngs(3))))
    save_umt5(tmp_path / "te", config, params)
    from transformers import UMT5EncoderModel

    model, info = UMT5EncoderModel.from_pretrained(tmp_path / "te", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = {name: t.detach().numpy() for name, t in model.state_dict().items()}
    for key in tensor_keys(config):  # our writer's layout is transformers' layout, key by key
        leaf = params
        for part in key.path:
            leaf = leaf[part]
        row = leaf[key.layer] if key.layer is not None else leaf
        np.testing.assert_array_equal(state[key.diffusers_key], key.to_diffusers(row))
        np.testing.assert_array_equal(key.to_fvjax(key.to_diffusers(row)), row)
    model.save_pretrained(tmp_path / "hf")  # and back through transformers' own writer
    _, loaded = load_umt5_params(tmp_path / "hf")
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, loaded), params)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("umt5") / "te"
    tiny_hf_encoder(vocab_size=40).save_pretrained(d)
    return d


def _variant(tmp_path, saved, edit) -> str:
    d = tmp_path / "variant"
    d.mkdir()
    (d / "config.json").write_text((saved / "config.json").read_text())
    tensors = load_file(str(saved / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def _one_line_error(path) -> str:
    with pytest.raises(UserError) as err:
        load_umt5_params(path)
    line = err.value.line()
    assert "\n" not in line
    return line


def test_tied_embedding_name_alone_loads(tmp_path, saved):
    def rename(t):
        t[TIED_EMBEDDING_KEY] = t.pop("shared.weight")

    _, expected = load_umt5_params(saved)
    _, params = load_umt5_params(_variant(tmp_path, saved, rename))
    np.testing.assert_array_equal(np.asarray(params["shared"]), np.asarray(expected["shared"]))


def test_missing_key(tmp_path, saved):
    key = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"
    line = _one_line_error(_variant(tmp_path, saved, lambda t: t.pop(key)))
    assert key in line and "missing" in line


def test_unexpected_key(tmp_path, saved):
    key = "decoder.block.0.layer.0.SelfAttention.q.weight"
    line = _one_line_error(_variant(tmp_path, saved, lambda t: t.update({key: np.zeros((2, 2), np.float32)})))
    assert key in line and "unexpected" in line


def test_wrong_shape(tmp_path, saved):
    key = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    line = _one_line_error(_variant(tmp_path, saved, lambda t: t.update({key: np.zeros((9, 4), np.float32)})))
    assert key in line and "wrong shape [9, 4]" in line


def test_missing_shard(tmp_path, saved):
    d = tmp_path / "sharded"
    tiny_hf_encoder(vocab_size=40).save_pretrained(d, max_shard_size="20KB")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (d / victim).unlink()
    assert victim in _one_line_error(d)


@pytest.mark.parametrize("change,key", [
    ({"model_type": "t5"}, "model_type"),
    ({"is_decoder": True}, "is_decoder"),
    ({"feed_forward_proj": "gated-tanh"}, "feed_forward_proj"),
    ({"position_embedding_type": "rotary"}, "position_embedding_type"),  # unknown: might change the math
])
def test_config_errors(change, key):
    with pytest.raises(UserError) as err:
        UMT5Config.from_hf_config({**WAN_TEXT_ENCODER_CONFIG, **change}, where="config.json")
    assert err.value.key == key and err.value.where == "config.json"


def test_not_a_text_encoder(tmp_path):
    assert "not a text encoder" in _one_line_error(tmp_path)

"""fp32 parity of fvjax's UMT5 encoder with transformers' UMT5EncoderModel, and of PromptEncoder.encode with
Diffusers' WanPipeline.encode_prompt, on tiny random models saved and loaded the way real ones are."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fvjax.families.wan.text import WAN_DEFAULT_NEGATIVE_PROMPT, WAN_NEGATIVE_PROMPT_ZH, PromptEncoder, load_umt5
from fvjax.families.wan.text.umt5 import relative_position_buckets
from text_utils import tiny_hf_encoder, tiny_tokenizer

ATOL = 5e-5  # outputs are O(1) (up to ~3); XLA and torch fp32 sums differ in order only (max seen 2.2e-5)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A Diffusers WanPipeline directory holding only a tokenizer and a text encoder (as save_pretrained
    writes them), plus the pipeline object itself as the oracle."""
    from diffusers import WanPipeline

    tokenizer = tiny_tokenizer()
    encoder = tiny_hf_encoder(vocab_size=len(tokenizer) + 8)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=None, scheduler=None, transformer=None)
    root = tmp_path_factory.mktemp("wan_pipeline")
    pipe.save_pretrained(root)
    return root, pipe


def test_encoder_matches_transformers_padded_and_unpadded(pipeline_dir):
    root, pipe = pipeline_dir
    _, encoder = load_umt5(root)
    rng = np.random.default_rng(0)
    ids = rng.integers(2, pipe.text_encoder.config.vocab_size, size=(3, 40))
    mask = np.ones((3, 40), np.int64)
    mask[1, 25:] = 0  # batch of different real lengths
    mask[2, 3:] = 0
    with torch.no_grad():
        ref_masked = pipe.text_encoder(torch.from_numpy(ids), torch.from_numpy(mask)).last_hidden_state.numpy()
        ref_full = pipe.text_encoder(torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(encoder(ids, mask)), ref_masked, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(encoder(ids)), ref_full, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(encoder(ids, np.ones_like(mask))), ref_full, atol=ATOL, rtol=0)
    assert np.abs(ref_masked - ref_full).max() > 1e-2  # the mask really changes the padded rows


def test_sharded_checkpoint_and_bf16_load(pipeline_dir, tmp_path):
    root, pipe = pipeline_dir
    pipe.text_encoder.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ids = np.arange(2, 30).reshape(2, 14) % pipe.text_encoder.config.vocab_size
    _, single = load_umt5(root)
    _, sharded = load_umt5(tmp_path / "sharded")
    np.testing.assert_array_equal(np.asarray(sharded(ids)), np.asarray(single(ids)))
    _, half = load_umt5(root, dtype="bfloat16")
    ref = np.asarray(single(ids))
    assert np.abs(np.asarray(half(ids)) - ref).max() < 0.1 * np.abs(ref).max()


@pytest.mark.parametrize("buckets,distance", [(32, 128), (8, 16)])
def test_relative_position_buckets_match_transformers(buckets, distance):
    from transformers import UMT5Config
    from transformers.models.umt5.modeling_umt5 import UMT5Attention

    attn = UMT5Attention(UMT5Config(d_model=8, d_kv=2, num_heads=4, relative_attention_num_buckets=buckets,
                                    relative_attention_max_distance=distance), has_relative_attention_bias=True)
    length = 600  # every offset of a 512-token prompt and beyond max_distance
    offsets = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    expected = attn._relative_position_bucket(offsets).numpy()
    np.testing.assert_array_equal(relative_position_buckets(length, length, buckets, distance), expected)


PROMPTS = [
    "a cat on the beach",
    "  the   dog\tsurfing &amp;amp; a cat\n",  # whitespace and double-escaped HTML: cleaned before tokenizing
    "",  # an empty prompt is EOS only
    "猫在冲浪 " + "static low quality " * 200,  # longer than max_length: truncated, EOS kept
]


def _encode_prompts(pipe, prompts, negatives, max_length, dtype):
    with torch.no_grad():
        return [x.numpy() for x in pipe.encode_prompt(prompts, negative_prompt=negatives, max_sequence_length=max_length,
                                                        device=torch.device("cpu"), dtype=dtype)]


def _assert_near_exact(ours: np.ndarray, torch_fp32: np.ndarray, torch_fp64: np.ndarray) -> None:
    """fvjax's fp32 result within ATOL of the fp64 answer (transformers run in float64), as PyTorch's own
    fp32 result is. Compared with PyTorch's fp32 instead, both rounding errors add up: with transformers
    5.24 (SDPA attention) PyTorch fp32 is 2.7e-5 from fp64 on the 512-token prompts, fvjax 4.3e-5, and the
    two 5.3e-5 apart."""
    assert float(np.max(np.abs(torch_fp32 - torch_fp64))) <= ATOL   # the oracle itself is that close
    np.testing.assert_allclose(ours, torch_fp64, atol=ATOL, rtol=0)


@pytest.mark.parametrize("max_length", [512, 37])
def test_prompt_encoder_matches_wan_pipeline(pipeline_dir, max_length):
    import copy

    from diffusers import WanPipeline

    root, pipe = pipeline_dir
    encoder = PromptEncoder.load(root, batch_size=3)  # 4 prompts: a full chunk and a remainder
    negatives = [WAN_DEFAULT_NEGATIVE_PROMPT, WAN_NEGATIVE_PROMPT_ZH, "", "blurry"]
    ref, ref_neg = _encode_prompts(pipe, PROMPTS, negatives, max_length, torch.float32)
    exact_pipe = WanPipeline(tokenizer=pipe.tokenizer, text_encoder=copy.deepcopy(pipe.text_encoder).double(), vae=None,
                             scheduler=None, transformer=None)
    exact, exact_neg = _encode_prompts(exact_pipe, PROMPTS, negatives, max_length, torch.float64)
    embeds, mask = encoder.encode_with_mask(PROMPTS, max_length=max_length)
    assert embeds.shape == (4, max_length, 32) and embeds.dtype == np.float32
    _assert_near_exact(embeds, ref, exact)
    _assert_near_exact(encoder.encode(negatives, max_length=max_length), ref_neg, exact_neg)
    lengths = mask.sum(axis=1)
    assert lengths[2] == 1 and lengths[3] == max_length and lengths[0] < lengths[1] < max_length
    for row, n in zip(embeds, lengths):  # exact zeros from each prompt's real length on
        assert np.all(row[n:] == 0) and np.all(np.abs(row[:n]).sum(axis=-1) > 0)


def test_tokenizer_beyond_the_encoder_vocab_is_a_user_error():
    import dataclasses

    from flax import nnx

    from fvjax.errors import UserError
    from fvjax.families.wan.text import PRESETS, UMT5Encoder

    encoder = UMT5Encoder(dataclasses.replace(PRESETS["tiny"], vocab_size=8), rngs=nnx.Rngs(0))
    with pytest.raises(UserError, match="vocab_size 8"):
        PromptEncoder(tiny_tokenizer(), encoder).encode(["a cat on the beach"])

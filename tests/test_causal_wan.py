"""The causal Wan DiT (fvjax/families/wan/causal/): full-sequence block-causal parity with Diffusers'
WanTransformer3DModel run with a block-causal attention processor (written here) and per-token
timesteps; cache mode (chunk by chunk, chunk() then write_chunk()) equals full block-causal mode;
with_context reproduces the chunk() outputs; windows with sinks agree between the modes; cache sizes at
full scale without allocation.

Measured on this CPU (max abs error / max |reference|): Diffusers parity 2e-7 .. 5e-7 (bound 1e-4);
cache mode vs full mode and with_context vs chunk() ~1e-7 (bound 1e-5).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from flax import nnx

from fvjax.families.wan.causal import (CausalWanConfig, CausalWanTransformer, abstract_cache, block_bounds,
                                       block_sizes, empty_cache, model_from_params, write_chunk)
from fvjax.families.wan.causal.config import PRESETS
from fvjax.families.wan.config import WanConfig
from fvjax.models.params import params_of
from wan_torch_reference import fvjax_params, max_rel_err, torch_model

FP32_TOL = 1e-4   # of the output's scale, against Diffusers
MODES_TOL = 1e-5  # of the output's scale, one fvjax mode against another

BASE = WanConfig(num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, text_dim=32,
                 freq_dim=32, ffn_dim=64, num_layers=3, rope_max_seq_len=64)
GLOBAL3 = CausalWanConfig.from_wan(BASE, num_frames_per_block=3)
GLOBAL2 = CausalWanConfig.from_wan(BASE, num_frames_per_block=2)
WINDOW = CausalWanConfig.from_wan(BASE, num_frames_per_block=1, local_attn_size=4, sink_size=1)
WINDOW_NO_SINK = CausalWanConfig.from_wan(BASE, num_frames_per_block=2, local_attn_size=4)

HW = (4, 6)   # latent H != W: 2 x 3 tokens per frame


def test_block_sizes_put_the_remainder_first():
    assert block_sizes(21, 3) == (3,) * 7
    assert block_sizes(20, 3) == (5, 3, 3, 3, 3, 3)
    assert block_sizes(7, 3) == (4, 3)
    assert block_sizes(2, 3) == (2,)
    assert block_sizes(4, 1) == (1, 1, 1, 1)
    assert block_bounds(7, 3) == ((0, 4), (4, 7))
    # FastVideo's full-sequence mask counts blocks from frame 0: the short block comes last
    assert block_sizes(20, 3, remainder_first=False) == (3,) * 6 + (2,)
    assert block_sizes(21, 3, remainder_first=False) == (3,) * 7
    assert block_bounds(7, 3, remainder_first=False) == ((0, 3), (3, 6), (6, 7))


def test_config_round_trips_fastvideo_config_json():
    raw = WINDOW.to_diffusers_config()
    assert raw["_class_name"] == "CausalWanTransformer3DModel"
    assert (raw["num_frames_per_block"], raw["local_attn_size"], raw["sink_size"]) == (1, 4, 1)
    assert CausalWanConfig.from_diffusers_config(raw) == WINDOW
    legacy = dict(raw, num_frame_per_block=2)
    del legacy["num_frames_per_block"]
    assert CausalWanConfig.from_diffusers_config(legacy).num_frames_per_block == 2
    # A bidirectional Wan2.1 config.json (the student's usual initialisation) takes the causal defaults.
    assert CausalWanConfig.from_diffusers_config(BASE.to_diffusers_config()) == CausalWanConfig.from_wan(BASE)


# ---------------------------------------------------------------------------------------------------
# The PyTorch oracle

class BlockCausalProcessor(WanAttnProcessor):
    """Diffusers' Wan attention with a boolean [L, L] mask on self-attention (True = attend)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.mask = mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is None:
            attention_mask = self.mask
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


def dense_mask(config: CausalWanConfig, num_frames: int, tokens_per_frame: int) -> np.ndarray:
    """The full-sequence block-causal (windowed, with sinks) mask token by token, written from the
    definition: FastVideo's blocks of num_frames_per_block frames counted from frame 0."""
    sizes = block_sizes(num_frames, config.num_frames_per_block, remainder_first=False)
    block_end = np.repeat(np.cumsum(sizes), sizes)            # per frame: the end of its block
    fq = np.repeat(np.arange(num_frames), tokens_per_frame)[:, None]
    fk = np.repeat(np.arange(num_frames), tokens_per_frame)[None, :]
    end = block_end[fq]
    allowed = fk < end
    if config.local_attn_size != -1:
        allowed &= (fk < config.sink_size) | (fk >= end - config.local_attn_size + config.sink_size)
    return allowed


def torch_block_causal(config: CausalWanConfig, num_frames: int, tokens_per_frame: int):
    model = torch_model(WanConfig(**{f: getattr(config, f) for f in WanConfig.__dataclass_fields__}))
    mask = torch.from_numpy(dense_mask(config, num_frames, tokens_per_frame))
    for block in model.blocks:
        block.attn1.set_processor(BlockCausalProcessor(mask))
    return model


def inputs(config, num_frames, seed=1, batch=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, config.in_channels, num_frames, *HW), dtype=np.float32)
    t = rng.uniform(0.0, 1000.0, (batch, num_frames)).astype(np.float32)
    text = rng.standard_normal((batch, 12, config.text_dim), dtype=np.float32)
    text[:, 7:] = 0.0
    return x, t, text


@pytest.fixture(scope="module")
def models():
    """One Diffusers-weighted fvjax model per config, and its jitted modes (compiled once per shape)."""
    out = {}
    for name, config in {"global3": GLOBAL3, "global2": GLOBAL2, "window": WINDOW,
                         "window_no_sink": WINDOW_NO_SINK}.items():
        params = fvjax_params(torch_model(BASE), BASE.num_layers)   # same seed: the same weights
        graphdef, state = nnx.split(model_from_params(config, params))
        out[name] = dict(
            config=config, state=state,
            full=jax.jit(lambda st, x, t, c, g=graphdef: nnx.merge(g, st)(x, t, c)),
            chunk=jax.jit(lambda st, x, t, c, cache, s, g=graphdef: nnx.merge(g, st).chunk(x, t, c, cache, s)),
            context=jax.jit(lambda st, x, t, c, cache, g=graphdef: nnx.merge(g, st).with_context(x, t, c, cache)),
            write=jax.jit(write_chunk))
    return out


CASES = {  # name: (model, latent frames)
    "global3-f6": ("global3", 6),
    "global3-f7-remainder": ("global3", 7),
    "global2-f5-remainder": ("global2", 5),
    "window-sink-f7": ("window", 7),
    "window-f8": ("window_no_sink", 8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_block_causal_matches_diffusers_with_a_mask(case, models):
    name, frames = CASES[case]
    m = models[name]
    config = m["config"]
    s = (HW[0] // 2) * (HW[1] // 2)
    x, t, text = inputs(config, frames)
    reference = torch_block_causal(config, frames, s)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), torch.from_numpy(np.repeat(t, s, axis=1)),
                             torch.from_numpy(text), return_dict=False)[0].numpy()
    ours = m["full"](m["state"], x, t, text)
    err, rel = max_rel_err(ours, expected)
    print(f"{case}: max abs err {err:.3e}, relative {rel:.3e}")
    assert rel <= FP32_TOL
    # The mask matters: the bidirectional forward of the same weights is far off.
    with torch.no_grad():
        bidirectional = torch_model(BASE)(torch.from_numpy(x), torch.from_numpy(np.repeat(t, s, axis=1)),
                                          torch.from_numpy(text), return_dict=False)[0].numpy()
    assert max_rel_err(bidirectional, expected)[1] > 1e-2


def run_chunks(m, x, t, text, rolling=True, remainder_first=False):
    """Chunk by chunk: chunk() on each block, then write_chunk() of its K/V (a context pass on the same
    inputs). Blocks as the full-sequence mode counts them, or (remainder_first) as a rollout streams them.
    Returns (outputs concatenated over frames, the final cache)."""
    config = m["config"]
    frames = x.shape[2]
    cache = empty_cache(config, x.shape[0], frames, HW, jnp.float32, rolling=rolling)
    bounds = block_bounds(frames, config.num_frames_per_block, remainder_first)
    outs = []
    for start, end in bounds:
        out, kv = m["chunk"](m["state"], x[:, :, start:end], t[:, start:end], text, cache, jnp.int32(start))
        cache = m["write"](cache, kv, jnp.int32(start))
        outs.append(out)
    return jnp.concatenate(outs, axis=2), cache


@pytest.mark.parametrize("case", ["global3-f7-remainder", "global2-f5-remainder", "window-sink-f7", "window-f8"])
def test_cache_mode_equals_full_block_causal_mode(case, models):
    name, frames = CASES[case]
    m = models[name]
    x, t, text = inputs(m["config"], frames, seed=3)
    full = m["full"](m["state"], x, t, text)
    scale = float(jnp.abs(full).max())
    chunked, cache = run_chunks(m, x, t, text)
    err = float(jnp.abs(chunked - full).max())
    print(f"{case}: cache mode vs full {err / scale:.2e} (rolling={cache.rolling}, slots {cache.num_slots})")
    assert err <= MODES_TOL * scale
    if m["config"].windowed:
        assert cache.rolling and cache.num_slots == m["config"].local_attn_size   # the ring really rolled
        kept, _ = run_chunks(m, x, t, text, rolling=False)                      # every frame kept, masked
        assert float(jnp.abs(kept - full).max()) <= MODES_TOL * scale


@pytest.mark.parametrize("case", ["global3-f7-remainder", "window-sink-f7"])
def test_with_context_reproduces_every_chunk_output(case, models):
    name, frames = CASES[case]
    m = models[name]
    x, t, text = inputs(m["config"], frames, seed=4)
    chunked, cache = run_chunks(m, x, t, text, rolling=False, remainder_first=True)
    at_once = m["context"](m["state"], x, t, text, cache)
    err = float(jnp.abs(at_once - chunked).max())
    print(f"{case}: with_context vs chunk() {err / float(jnp.abs(chunked).max()):.2e}")
    assert err <= MODES_TOL * float(jnp.abs(chunked).max())
    # The cache is a constant of the grad pass: no gradient reaches it.
    total = lambda k, v: m["context"](m["state"], x, t, text, cache.replace(k=k, v=v)).sum()  # noqa: E731
    grad_k, grad_v = jax.grad(total, argnums=(0, 1))(cache.k, cache.v)
    assert float(jnp.abs(grad_k).max()) == 0.0 and float(jnp.abs(grad_v).max()) == 0.0


def test_rewriting_a_chunk_overwrites_its_slots(models):
    """Denoising steps write noisy K/V at a chunk's start; the context pass then overwrites the same slots."""
    m = models["global3"]
    x, t, text = inputs(m["config"], 6, seed=5)
    clean, cache_clean = run_chunks(m, x, t, text)
    cache = empty_cache(m["config"], 2, 6, HW, jnp.float32)
    noisy = x + 1.0
    for start, end in block_bounds(6, 3):
        _, kv = m["chunk"](m["state"], noisy[:, :, start:end], t[:, start:end] * 0 + 999.0, text, cache, jnp.int32(start))
        cache = m["write"](cache, kv, jnp.int32(start))
        _, kv = m["chunk"](m["state"], x[:, :, start:end], t[:, start:end], text, cache, jnp.int32(start))
        cache = m["write"](cache, kv, jnp.int32(start))
    np.testing.assert_array_equal(np.asarray(cache.frames), np.arange(6))
    np.testing.assert_allclose(np.asarray(cache.k), np.asarray(cache_clean.k), atol=1e-6)
    np.testing.assert_allclose(np.asarray(cache.v), np.asarray(cache_clean.v), atol=1e-6)


def test_full_size_cache_is_computable_without_allocation():
    """spec §2: 1.3B, 21 latent frames of 60 x 104 (1560 tokens each), bf16, B=1: 30 * 2 * 32760 * 1536 * 2 B."""
    config = PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    cache = abstract_cache(config, 1, 21, (60, 104), jnp.bfloat16)
    assert cache.k.shape == (30, 1, 21 * 1560, 12, 128)
    assert isinstance(cache.k, jax.ShapeDtypeStruct)
    assert abs(cache.nbytes / 1e9 - 6.04) < 0.01
    windowed = CausalWanConfig.from_wan(config, local_attn_size=12, sink_size=3)
    rolling = abstract_cache(windowed, 1, 1000, (60, 104), jnp.bfloat16)
    assert rolling.k.shape[2] == 12 * 1560 and rolling.rolling
    shapes = jax.eval_shape(lambda: CausalWanTransformer(config, rngs=nnx.Rngs(0)))   # the model, abstractly
    assert params_of(shapes)["blocks"]["attn1"]["to_q"]["kernel"].shape == (30, 1536, 1536)


def test_windows_that_cannot_hold_a_block_are_refused():
    from fvjax.errors import UserError
    with pytest.raises(UserError, match="local_attn_size"):
        CausalWanConfig.from_wan(BASE, num_frames_per_block=3, local_attn_size=3, sink_size=1).check()
    with pytest.raises(UserError, match="num_frames_per_block"):
        CausalWanConfig.from_wan(BASE, num_frames_per_block=4).check()


def test_key_mask_in_every_cpu_backend():
    """attention(kv_mask=...) drops keys: xla against a reference softmax, splash (Pallas interpret mode)
    against xla."""
    from fvjax.models.attention import attention
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 10, 2, 16), dtype=np.float32)) for _ in range(3))
    k, v = (jnp.asarray(rng.standard_normal((2, 24, 2, 16), dtype=np.float32)) for _ in range(2))
    mask = jnp.asarray(rng.uniform(size=(2, 24)) < 0.6).at[:, 0].set(True)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / 4.0
    probs = jax.nn.softmax(jnp.where(mask[:, None, None, :], logits, -jnp.inf), axis=-1)
    expected = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    xla = attention(q, k, v, backend="xla", kv_mask=mask)
    np.testing.assert_allclose(np.asarray(xla), np.asarray(expected), atol=1e-5)
    splash = attention(q, k, v, backend="splash", kv_mask=mask)
    np.testing.assert_allclose(np.asarray(splash), np.asarray(expected), atol=1e-4)


def test_bf16_compute_with_a_bf16_cache_agrees_with_full_mode():
    """fp32 master params, bf16 compute and cache (training's and streaming's setting): cache mode and full
    mode agree within bf16 rounding."""
    params = fvjax_params(torch_model(BASE), BASE.num_layers)
    graphdef, state = nnx.split(model_from_params(GLOBAL3, params, dtype=jnp.bfloat16))
    m = dict(config=GLOBAL3, state=state, write=jax.jit(write_chunk),
             chunk=jax.jit(lambda st, x, t, c, cache, s: nnx.merge(graphdef, st).chunk(x, t, c, cache, s)))
    x, t, text = inputs(GLOBAL3, 7, seed=6)
    full = jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st)(x, t, c))(state, x, t, text).astype(jnp.float32)
    cache = empty_cache(GLOBAL3, 2, 7, HW, jnp.bfloat16)
    outs = []
    for start, end in block_bounds(7, 3, remainder_first=False):
        out, kv = m["chunk"](state, x[:, :, start:end], t[:, start:end], text, cache, jnp.int32(start))
        assert kv.k.dtype == jnp.bfloat16
        cache = m["write"](cache, kv, jnp.int32(start))
        outs.append(out.astype(jnp.float32))
    err = float(jnp.abs(jnp.concatenate(outs, axis=2) - full).max()) / float(jnp.abs(full).max())
    print(f"bf16 cache mode vs full mode: {err:.2e}")
    assert err <= 2e-2

"""The causal Wan's self-attention patterns (`attend(q, k, v) -> (out, side output)` for
WanAttention.self_attention), all built on `fvjax.models.attention.attention`.

- block_causal: the full sequence; query block i attends to its static key range (blocks <= i, the
  window) with one unmasked attention call per query block — no [L, L] mask at any size.
- cached_chunk: one chunk's queries attend to the cache's visible slots plus the chunk's own keys: the
  chunk's K/V are written into a scratch copy of the layer's buffer at their slots and a key mask over
  the slots (from the cache's frame bookkeeping) drops empty and out-of-window ones. Side output: the
  chunk's roped (k, v), for the caller to write.
- teacher_forcing: the [clean | noisy] sequence (2F frames) of FastVideo's teacher forcing; clean block i
  attends to clean blocks <= i, noisy block i to clean blocks < i and itself — two static key ranges, one
  unmasked call per query block, no [2L, 2L] mask.
- with_context: the full sequence again, but block i's earlier frames come from the cache (constants:
  stop_gradient) instead of from x; static slices of a cache whose slot is the frame.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fvjax.families.wan.causal.cache import KVCache, token_mask, visible_frames, write_layer
from fvjax.families.wan.causal.config import CausalWanConfig
from fvjax.models.attention import attention


def key_ranges(config: CausalWanConfig, start: int, end: int) -> tuple[tuple[int, int], ...]:
    """Static latent-frame ranges a query block [start, end) attends to (config.py: window semantics)."""
    if not config.windowed:
        return ((0, end),)
    low = max(0, end - config.local_attn_size + config.sink_size)
    if low <= config.sink_size:
        return ((0, end),)
    return ((0, config.sink_size), (low, end)) if config.sink_size else ((low, end),)


def _frames_slice(x: jax.Array, lo: int, hi: int, s: int) -> jax.Array:
    return x[:, lo * s:hi * s]


def block_causal(config: CausalWanConfig, bounds, tokens_per_frame: int, backend: str):
    s = tokens_per_frame

    def attend(q, k, v):
        outs = []
        for start, end in bounds:
            ranges = key_ranges(config, start, end)
            keys = jnp.concatenate([_frames_slice(k, lo, hi, s) for lo, hi in ranges], axis=1)
            values = jnp.concatenate([_frames_slice(v, lo, hi, s) for lo, hi in ranges], axis=1)
            outs.append(attention(_frames_slice(q, start, end, s), keys, values, backend=backend))
        return jnp.concatenate(outs, axis=1), None

    return attend


def teacher_forcing(bounds, num_frames: int, tokens_per_frame: int, backend: str):
    """Over [clean frames 0..F-1 | noisy frames 0..F-1]: the clean half is block-causal among itself; noisy
    block [start, end) sees the clean frames [0, start) (the ground-truth history, not its own noisy past)
    and its own noisy frames. Global only (FastVideo has no windowed teacher forcing)."""
    s, noisy = tokens_per_frame, num_frames

    def attend(q, k, v):
        outs = [attention(_frames_slice(q, start, end, s), _frames_slice(k, 0, end, s),
                          _frames_slice(v, 0, end, s), backend=backend) for start, end in bounds]
        for start, end in bounds:
            ranges = ((0, start),) * (start > 0) + ((noisy + start, noisy + end),)
            keys = jnp.concatenate([_frames_slice(k, lo, hi, s) for lo, hi in ranges], axis=1)
            values = jnp.concatenate([_frames_slice(v, lo, hi, s) for lo, hi in ranges], axis=1)
            outs.append(attention(_frames_slice(q, noisy + start, noisy + end, s), keys, values, backend=backend))
        return jnp.concatenate(outs, axis=1), None

    return attend


def cached_chunk(cache: KVCache, layer_k: jax.Array, layer_v: jax.Array, start_frame: jax.Array,
                 kv_mask: jax.Array, backend: str):
    def attend(q, k, v):
        keys, values = write_layer(cache, k, v, layer_k, layer_v, start_frame)
        keys, values = keys.astype(q.dtype), values.astype(q.dtype)   # a cache kept in another dtype
        return attention(q, keys, values, backend=backend, kv_mask=kv_mask), (k, v)

    return attend


def chunk_kv_mask(config: CausalWanConfig, cache: KVCache, frames_after_write: jax.Array,
                  chunk_end: jax.Array) -> jax.Array:
    """[slots * S] bool: the slots a chunk ending at `chunk_end` sees once its own frames are written."""
    return token_mask(visible_frames(config, frames_after_write, chunk_end), cache.tokens_per_frame)


def with_context(config: CausalWanConfig, cache: KVCache, layer_k: jax.Array, layer_v: jax.Array, bounds,
                 backend: str):
    s = cache.tokens_per_frame
    layer_k, layer_v = jax.lax.stop_gradient(layer_k), jax.lax.stop_gradient(layer_v)

    def attend(q, k, v):
        outs = []
        for start, end in bounds:
            cached = [(lo, min(hi, start)) for lo, hi in key_ranges(config, start, end) if lo < start]
            keys = [_frames_slice(layer_k, lo, hi, s).astype(k.dtype) for lo, hi in cached]
            values = [_frames_slice(layer_v, lo, hi, s).astype(v.dtype) for lo, hi in cached]
            masks = [token_mask(visible_frames(config, cache.frames[lo:hi], end), s) for lo, hi in cached]
            keys.append(_frames_slice(k, start, end, s))
            values.append(_frames_slice(v, start, end, s))
            masks.append(jnp.ones(((end - start) * s,), bool))
            outs.append(attention(_frames_slice(q, start, end, s), jnp.concatenate(keys, axis=1),
                                  jnp.concatenate(values, axis=1), backend=backend,
                                  kv_mask=jnp.concatenate(masks) if cached else None))
        return jnp.concatenate(outs, axis=1), None

    return attend

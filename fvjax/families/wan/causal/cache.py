"""The causal Wan's functional KV cache: a pytree the caller owns and threads through chunk calls.

    cache = empty_cache(config, batch, max_frames, (H, W), jnp.bfloat16)   # or model.empty_cache(...)
    out, new_kv = model.chunk(x_chunk, t, text, cache, start_frame)
    cache = write_chunk(cache, new_kv, start_frame)                         # or cache.write(...)

k, v: [num_layers, B, slots * S, heads, head_dim] with S tokens per latent frame (after patching); the
buffer is a sequence of frame slots. `frames[slot]` is the absolute latent frame a slot holds (-1 =
empty): it is all the bookkeeping there is — validity, the window and rewrites of the same chunk follow
from it, so writing the same start_frame twice overwrites the same slots (FastVideo's denoising steps
then context pass).

Layout. Global attention (local_attn_size -1) or `rolling=False`: slot = frame, `max_frames` slots.
Windowed (local_attn_size W) with `rolling=True` and max_frames > W: W slots, the first `sink_size`
hold the sink frames for good and frame f >= sink goes to slot sink + (f - sink) mod (W - sink), so a
new chunk overwrites the oldest non-sink frames (FastVideo's eviction). Keys keep their absolute RoPE,
and attention does not care about slot order, so no shifting is needed. Chunks must be written in frame
order (rewriting the newest chunk is fine) for the ring to hold the window.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from fvjax.families.wan.causal.config import CausalWanConfig


@struct.dataclass
class KVCache:
    k: jax.Array                 # [L, B, slots*S, H, Dh], compute dtype, roped keys
    v: jax.Array                 # [L, B, slots*S, H, Dh]
    frames: jax.Array            # int32 [slots]: latent frame held by each slot, -1 = empty
    tokens_per_frame: int = struct.field(pytree_node=False, default=1)
    sink_frames: int = struct.field(pytree_node=False, default=0)   # ring only: slots never evicted
    rolling: bool = struct.field(pytree_node=False, default=False)

    @property
    def num_slots(self) -> int:
        return self.frames.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in (self.k, self.v, self.frames))

    def slot_of(self, frame: jax.Array) -> jax.Array:
        """The slot frame `frame` (int32, may be traced) is written to."""
        frame = jnp.asarray(frame, jnp.int32)
        if not self.rolling:
            return frame
        ring = self.num_slots - self.sink_frames
        return jnp.where(frame < self.sink_frames, frame, self.sink_frames + (frame - self.sink_frames) % ring)

    def write(self, new_kv: "ChunkKV", start_frame: jax.Array) -> "KVCache":
        """`write_chunk(self, new_kv, start_frame)`: code outside the family reaches it through the cache."""
        return write_chunk(self, new_kv, start_frame)


@struct.dataclass
class ChunkKV:
    """One chunk's roped K/V of every layer: [L, B, Fc*S, H, Dh] each (chunk()'s side output)."""
    k: jax.Array
    v: jax.Array


def cache_slots(config: CausalWanConfig, max_frames: int, rolling: bool = True) -> tuple[int, bool]:
    """(number of frame slots, whether the slots form a ring) for a video of up to `max_frames` latent frames
    (rolling windowed caches: any length)."""
    if config.windowed and rolling and max_frames > config.local_attn_size:
        return config.local_attn_size, True
    return max_frames, False


def tokens_per_frame(config: CausalWanConfig, latent_hw: tuple[int, int]) -> int:
    _, ph, pw = config.patch_size
    h, w = latent_hw
    if h % ph or w % pw:
        raise ValueError(f"latent (H, W) = {(h, w)} must be divisible by the patch size {(ph, pw)}")
    return (h // ph) * (w // pw)


def cache_shape(config: CausalWanConfig, batch: int, max_frames: int, latent_hw: tuple[int, int],
                rolling: bool = True) -> tuple[int, ...]:
    slots, _ = cache_slots(config, max_frames, rolling)
    return (config.num_layers, batch, slots * tokens_per_frame(config, latent_hw), config.num_attention_heads,
            config.attention_head_dim)


def empty_cache(config: CausalWanConfig, batch: int, max_frames: int, latent_hw: tuple[int, int],
                dtype: Any = jnp.bfloat16, rolling: bool = True) -> KVCache:
    """A cache for one video batch. Global attention: `max_frames` latent frames at most. Windowed:
    W = local_attn_size slots that roll (any length) unless `rolling=False` (then `max_frames` slots,
    every frame kept: what `with_context` needs)."""
    slots, ring = cache_slots(config, max_frames, rolling)
    shape = cache_shape(config, batch, max_frames, latent_hw, rolling)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), frames=jnp.full((slots,), -1, jnp.int32),
                   tokens_per_frame=tokens_per_frame(config, latent_hw),
                   sink_frames=config.sink_size if ring else 0, rolling=ring)


def abstract_cache(config: CausalWanConfig, batch: int, max_frames: int, latent_hw: tuple[int, int],
                   dtype: Any = jnp.bfloat16, rolling: bool = True) -> KVCache:
    """The cache's ShapeDtypeStructs (nothing allocated): sizes at full scale."""
    return jax.eval_shape(lambda: empty_cache(config, batch, max_frames, latent_hw, dtype, rolling))


def _write_frames(buffer: jax.Array, chunk: jax.Array, slots: jax.Array, s: int, axis: int) -> jax.Array:
    """buffer [..., slots*S (axis), ...] with chunk's frames (Fc*S tokens along `axis`) at `slots` [Fc]."""
    num_frames = chunk.shape[axis] // s
    starts = [0] * buffer.ndim
    for i in range(num_frames):
        starts[axis] = slots[i] * s
        piece = jax.lax.slice_in_dim(chunk, i * s, (i + 1) * s, axis=axis)
        buffer = jax.lax.dynamic_update_slice(buffer, piece.astype(buffer.dtype), tuple(starts))
    return buffer


def chunk_slots(cache: KVCache, start_frame: jax.Array, num_frames: int) -> jax.Array:
    """int32 [num_frames]: the slots of frames start_frame .. start_frame + num_frames - 1."""
    return cache.slot_of(jnp.asarray(start_frame, jnp.int32) + jnp.arange(num_frames, dtype=jnp.int32))


def written_frames(cache: KVCache, start_frame: jax.Array, num_frames: int) -> jax.Array:
    """`cache.frames` after writing frames start_frame .. + num_frames - 1."""
    frames = jnp.asarray(start_frame, jnp.int32) + jnp.arange(num_frames, dtype=jnp.int32)
    return cache.frames.at[chunk_slots(cache, start_frame, num_frames)].set(frames)


def write_layer(cache: KVCache, k: jax.Array, v: jax.Array, layer_k: jax.Array, layer_v: jax.Array,
                start_frame: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One layer's buffers [B, slots*S, H, Dh] with a chunk's k, v [B, Fc*S, H, Dh] written."""
    s = cache.tokens_per_frame
    slots = chunk_slots(cache, start_frame, k.shape[1] // s)
    return _write_frames(layer_k, k, slots, s, 1), _write_frames(layer_v, v, slots, s, 1)


def write_chunk(cache: KVCache, new_kv: ChunkKV, start_frame: jax.Array) -> KVCache:
    """The cache with a chunk's K/V (chunk()'s second output) written at its frames' slots."""
    s = cache.tokens_per_frame
    if new_kv.k.shape[2] % s:
        raise ValueError(f"the chunk's K/V hold {new_kv.k.shape[2]} tokens, not whole frames of {s}")
    num_frames = new_kv.k.shape[2] // s
    if not cache.rolling and num_frames > cache.num_slots:
        raise ValueError(f"a {num_frames}-frame chunk does not fit a {cache.num_slots}-frame cache")
    slots = chunk_slots(cache, start_frame, num_frames)
    return cache.replace(k=_write_frames(cache.k, new_kv.k, slots, s, 2), v=_write_frames(cache.v, new_kv.v, slots, s, 2),
                         frames=written_frames(cache, start_frame, num_frames))


def visible_frames(config: CausalWanConfig, frames: jax.Array, block_end: jax.Array) -> jax.Array:
    """bool, frames' shape: which held frames a query block ending (exclusive) at `block_end` sees —
    written, before the block's end, and inside the window [0, sink) + [end - W + sink, end)."""
    frames = jnp.asarray(frames)
    keep = (frames >= 0) & (frames < block_end)
    if config.windowed:
        keep &= (frames < config.sink_size) | (frames >= block_end - config.local_attn_size + config.sink_size)
    return keep


def token_mask(frame_mask: jax.Array, tokens_per_frame: int) -> jax.Array:
    """[slots] -> [slots * S] (frame-major tokens)."""
    return jnp.repeat(frame_mask, tokens_per_frame, axis=-1)

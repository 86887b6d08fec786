"""Streaming text-to-video with a causal student (Self-Forcing inference, spec self_forcing.md §5 and §7).

For each causal chunk of latent frames (`block_sizes(T, num_frames_per_block)`, remainder first): start
from its slice of the noise, run the few-step chain against the KV cache (x0 = G(x, t_k); SDE: re-noise
x0 to t_{k+1} with fresh noise, ODE: carry the implied noise), then one context pass on x0 (noised to
`context_noise` if > 0) whose K/V are written into the cache. That is one jitted `chunk step` per chunk
shape with the cache donated, driven from the host so each chunk can be decoded (causal VAE, its
feature cache carried across chunks) and shown as it lands.

Long videos: a rolling cache (local_attn_size W, sink_size) holds W frames whatever the length; a global
cache holds at most GLOBAL_MAX_FRAMES latent frames, as FastVideo's causal Wan does.

    latents = stream_video_latents(graphdef, params, config, context, noise, spec, key=key,
                                   on_chunk=lambda x0, start, end: ...)

`graphdef`/`params`: an nnx split of a CausalWanTransformer (a training role's graphdef and params work
as they are); `context` [B, 512, text_dim]; `noise` [B, C, T, H, W].
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fvjax.errors import fail
from fvjax.keys import standard_normal
from fvjax.models.causal_blocks import block_bounds
from fvjax.methods.self_forcing.schedule import SelfForcingLevels, warp_steps

# FastVideo's causal Wan refuses global attention past this many latent frames (its compatibility window).
GLOBAL_MAX_FRAMES = 21
# FastVideo's Self-Forcing inference: 4 steps warped onto the shift-5 grid, clean context.
DEFAULT_STEPS = (1000, 750, 500, 250)
DEFAULT_SHIFT = 5.0


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """The few-step chain per chunk. denoising_steps: model timesteps, noisiest first (already warped)."""
    denoising_steps: tuple[float, ...] = tuple(float(t) for t in warp_steps(DEFAULT_STEPS, DEFAULT_SHIFT))
    shift: float = DEFAULT_SHIFT
    context_noise: float = 0.0
    sample_type: str = "sde"     # sde: fresh noise between steps; ode: the implied noise

    def __post_init__(self):
        if self.sample_type not in ("sde", "ode"):
            raise ValueError(f"sample_type must be 'sde' or 'ode'; got {self.sample_type!r}")
        if not self.denoising_steps:
            raise ValueError("denoising_steps is empty")


def check_stream_length(config: Any, num_frames: int, where: object = "command line",
                        key: str = "--num-frames") -> None:
    """One line when `num_frames` latent frames cannot be streamed with this attention."""
    if config.windowed:
        if num_frames > config.rope_max_seq_len:
            fail(where, key, f"{num_frames} latent frames exceed the model's {config.rope_max_seq_len} RoPE frame "
                 "positions (rope_max_seq_len)")
        return
    if num_frames > GLOBAL_MAX_FRAMES:
        fail(where, key, f"{num_frames} latent frames overflow the global KV cache ({GLOBAL_MAX_FRAMES} latent frames, "
             f"as FastVideo's causal Wan); stream longer videos with a rolling window: set local_attn_size (e.g. "
             f"--local-attn-size 12 --sink-size 3, FastVideo's pipeline.dit_config)")


def stream_cache(graphdef, params, config: Any, batch: int, num_frames: int, latent_hw: tuple[int, int],
                 dtype: Any = None):
    """An empty KV cache for streaming `num_frames` latent frames (a window's worth when windowed); dtype:
    default the model's compute dtype, K/V as the attention computes them."""
    frames = num_frames if not config.windowed else max(num_frames, config.local_attn_size)
    return nnx.merge(graphdef, params).empty_cache(batch, frames, latent_hw, dtype)


@functools.partial(jax.jit, static_argnames=("graphdef", "spec"), donate_argnames=("cache",))
def chunk_step(graphdef, params, cache, noise_chunk: jax.Array, context: jax.Array, start_frame: jax.Array,
               key: jax.Array, spec: StreamSpec):
    """One chunk: the few-step chain against `cache`, then the context pass writing the chunk's K/V.
    Returns (the updated cache, x0 of the chunk [B, C, Fc, H, W] float32)."""
    model = nnx.merge(graphdef, params)
    levels = SelfForcingLevels(spec.shift)
    b, _, frames = noise_chunk.shape[:3]
    steps = spec.denoising_steps
    dtype = model.dtype

    def at(t):   # per-frame timesteps [B, Fc]: the rollout's step functions (SelfForcingLevels.*_frames)
        return jnp.full((b, frames), t, jnp.float32)

    def velocity(x, t_frames):
        return model.chunk(x.astype(dtype), t_frames, context, cache, start_frame)

    x = noise_chunk.astype(jnp.float32)
    x0 = x
    for k, t in enumerate(steps):
        v, _ = velocity(x, at(t))
        x0 = levels.x0_from_velocity_frames(x, v, at(t))
        if k + 1 < len(steps):
            if spec.sample_type == "sde":
                eps = standard_normal(jax.random.fold_in(key, k), x.shape)
                x = levels.add_noise_frames(x0, eps, at(steps[k + 1]))
            else:
                x = levels.ode_renoise_frames(x, x0, at(t), at(steps[k + 1]))
    if spec.context_noise > 0:
        eps = standard_normal(jax.random.fold_in(key, len(steps)), x0.shape)
        ctx, t_ctx = levels.add_noise_frames(x0, eps, at(spec.context_noise)), spec.context_noise
    else:
        ctx, t_ctx = x0, 0.0
    _, kv = velocity(ctx, at(t_ctx))
    return cache.write(kv, start_frame), x0


def stream_video_latents(graphdef, params, config: Any, context: jax.Array, noise: jax.Array,
                         spec: StreamSpec = StreamSpec(), *, key: jax.Array | None = None, cache_dtype: Any = None,
                         on_chunk: Callable[[jax.Array, int, int], None] | None = None) -> jax.Array:
    """Final latents [B, C, T, H, W] (float32), chunk by chunk; `on_chunk(x0 [B, C, Fc, H, W], start, end)`
    is called as each chunk lands (decode / display it there). `key` drives the SDE re-noising."""
    noise = jnp.asarray(noise, jnp.float32)
    b, _, frames, height, width = noise.shape
    check_stream_length(config, frames, "stream_video_latents", "noise")
    key = jax.random.key(0) if key is None else key
    cache = stream_cache(graphdef, params, config, b, frames, (height, width), cache_dtype)
    context = jnp.asarray(context)
    chunks = []
    for index, (start, end) in enumerate(block_bounds(frames, config.num_frames_per_block)):
        cache, x0 = chunk_step(graphdef, params, cache, noise[:, :, start:end], context, jnp.int32(start),
                               jax.random.fold_in(key, index), spec)
        if on_chunk is not None:
            on_chunk(x0, start, end)
        chunks.append(x0)
    return jnp.concatenate(chunks, axis=2)


class StreamingDecoder:
    """Decodes a video's latent chunks in order as they land (the causal VAE's feature caches carried):
    `decode(chunk) -> uint8 frames [B, F, H, W, 3]`; the frames of all chunks are the whole video's. One
    jitted program per latent frame (first frame, later frame), whatever the chunk sizes."""

    def __init__(self, vae, denormalize: Callable[[jax.Array, Any], jax.Array]):
        self.config = vae.config
        graphdef, self._state = nnx.split(vae)
        config = vae.config

        def frame(state, z, caches):
            return nnx.merge(graphdef, state).decode_frames(denormalize(z, config), caches)

        self._first = jax.jit(lambda state, z: frame(state, z, None))
        self._next = jax.jit(frame, donate_argnums=(2,))
        self.caches = None

    def reset(self) -> None:
        self.caches = None

    def decode(self, latents: jax.Array) -> np.ndarray:
        from fvjax.io.video import video_to_uint8

        pieces = []
        for i in range(latents.shape[2]):
            z = latents[:, :, i:i + 1]
            video, self.caches = self._first(self._state, z) if self.caches is None else \
                self._next(self._state, z, self.caches)
            pieces.append(np.asarray(jax.device_get(video), np.float32))
        video = np.concatenate(pieces, axis=2)
        return np.stack([video_to_uint8(sample) for sample in video])


@dataclasses.dataclass
class StreamTiming:
    """Wall-clock figures of one streamed video (seconds; frames are decoded pixel frames)."""
    first_chunk_latency: float     # from the start until the first chunk's pixels exist
    total: float
    frames: int

    @property
    def fps(self) -> float:
        return self.frames / self.total if self.total > 0 else float("inf")


def stream_video(graphdef, params, config: Any, context: jax.Array, noise: jax.Array,
                 decoder: StreamingDecoder, spec: StreamSpec = StreamSpec(), *, key: jax.Array | None = None,
                 on_frames: Callable[[np.ndarray], None] | None = None) -> tuple[np.ndarray, StreamTiming]:
    """uint8 frames [B, F, H, W, 3] of the streamed video and its timing; each chunk is decoded as it lands
    (`on_frames(frames)` sees them then)."""
    decoder.reset()
    pieces: list[np.ndarray] = []
    marks: list[float] = []
    started = time.perf_counter()

    def land(x0, start, end):
        frames = decoder.decode(x0)
        marks.append(time.perf_counter())
        pieces.append(frames)
        if on_frames is not None:
            on_frames(frames)

    stream_video_latents(graphdef, params, config, context, noise, spec, key=key, on_chunk=land)
    video = np.concatenate(pieces, axis=1)
    return video, StreamTiming(marks[0] - started, marks[-1] - started, video.shape[1])


def warm_up(graphdef, params, config: Any, context: jax.Array, noise_shape: tuple[int, ...],
            decoder: StreamingDecoder | None, spec: StreamSpec = StreamSpec()) -> float:
    """Compile (and run once) every program a stream of `noise_shape` [B, C, T, H, W] uses — one chunk step
    per chunk size, the VAE's first- and later-frame decodes — so latency figures are not compile times.
    Returns the seconds spent."""
    started = time.perf_counter()
    b, c, frames, height, width = noise_shape
    sizes = [end - start for start, end in block_bounds(frames, config.num_frames_per_block)]
    # The first chunk gets a fresh cache, later ones a chunk step's output (its own compiled variant):
    # the first size, then each later size once, threading the cache as the stream does.
    cache = stream_cache(graphdef, params, config, b, frames, (height, width))
    for size in sizes[:1] + sorted(set(sizes[1:])):
        cache, x0 = chunk_step(graphdef, params, cache, jnp.zeros((b, c, size, height, width), jnp.float32),
                               jnp.asarray(context), jnp.int32(0), jax.random.key(0), spec)
        jax.block_until_ready(x0)
    if decoder is not None:
        decoder.reset()
        decoder.decode(jnp.zeros((b, c, 2, height, width), jnp.float32))
        decoder.reset()
    return time.perf_counter() - started

"""The causal Wan DiT (FastVideo's `CausalWanTransformer3DModel`): WanTransformer's parameters and
blocks, per-frame timesteps [B, F], block-causal self-attention and a functional KV cache.

    model = CausalWanTransformer(config, rngs=nnx.Rngs(0))
    out = model(x [B, C, F, H, W], t [B] or [B, F], text)               # full sequence, block-causal
    cache = model.empty_cache(batch, max_frames, (H, W))                  # the caller owns the cache
    out, new_kv = model.chunk(x_chunk, t [B, Fc], text, cache, start)     # one chunk against the cache
    cache = cache.write(new_kv, start)
    out = model.with_context(x, t [B, F], text, cache)                   # Self-Forcing's grad pass
    out = model.teacher_forcing(x_t, t [B] or [B, F], text, x0)          # teacher-forcing SFT

Blocks (fvjax/models/causal_blocks.py): the full-sequence mode uses FastVideo's mask, blocks counted from
frame 0 (a short block last), and so does `teacher_forcing` (FastVideo's teacher-forcing mask);
`with_context` uses the rollout's chunks (the remainder first), as the chunks it reproduces were streamed. The module never mutates anything; `start` may be traced (RoPE at
absolute frame positions, slots from the bookkeeping). Temporal patch size 1 only (every Wan2.1
checkpoint): a latent frame is a token frame.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fvjax.families.wan.block import ACT_AXES
from fvjax.families.wan.causal import attention as patterns
from fvjax.families.wan.causal.cache import ChunkKV, KVCache, empty_cache, written_frames
from fvjax.families.wan.causal.config import CausalWanConfig, block_bounds
from fvjax.families.wan.causal.rope import rope_cos_sin_at
from fvjax.families.wan.rope import rope_cos_sin
from fvjax.families.wan.transformer import WanTransformer
from fvjax.models.remat import remat
from fvjax.sharding import constrain

ROPE_AXES = ("act_seq", None)


class CausalWanTransformer(WanTransformer):
    def __init__(self, config: CausalWanConfig, *, rngs: nnx.Rngs, attention_backend: str = "auto", **kwargs):
        if not isinstance(config, CausalWanConfig):
            raise TypeError(f"CausalWanTransformer needs a CausalWanConfig; got {type(config).__name__}")
        if config.patch_size[0] != 1:
            raise ValueError(f"the causal Wan needs temporal patch size 1; got {config.patch_size}")
        super().__init__(config, rngs=rngs, attention_backend=attention_backend, **kwargs)
        self.attention_backend = attention_backend

    # ------------------------------------------------------------------ the three modes

    def __call__(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any) -> jax.Array:
        """Full-sequence block-causal forward: [B, C, F, H, W], t [B] or [B, F], text -> [B, Cout, F, H, W]."""
        tokens, temb, modulation, context, grid = self._embed(hidden_states, timestep, encoder_hidden_states)
        bounds = self._bounds(grid[0], remainder_first=False)
        attend = patterns.block_causal(self.config, bounds, grid[1] * grid[2], self.attention_backend)
        tokens, _ = self._run_causal(tokens, context, modulation, self._rope(grid), lambda _: attend, None)
        return self._head(tokens, temb, grid)

    def chunk(self, x_chunk: Any, timestep: Any, encoder_hidden_states: Any, cache: KVCache,
              start_frame: Any) -> tuple[jax.Array, ChunkKV]:
        """One chunk (latent frames start_frame .. + Fc - 1) against the cache's visible frames plus itself.
        Returns (out [B, Cout, Fc, H, W], the chunk's roped K/V of every layer)."""
        tokens, temb, modulation, context, grid = self._embed(x_chunk, timestep, encoder_hidden_states)
        self._check_cache(cache, grid)
        num_frames = grid[0]
        if self.config.windowed and num_frames > self.config.local_attn_size - self.config.sink_size:
            raise ValueError(f"a {num_frames}-frame chunk does not fit the window (local_attn_size "
                             f"{self.config.local_attn_size}, sink_size {self.config.sink_size})")
        start = jnp.asarray(start_frame, jnp.int32)
        rope = self._rope(grid, start)
        kv_mask = patterns.chunk_kv_mask(self.config, cache, written_frames(cache, start, num_frames),
                                         start + num_frames)
        backend = self.attention_backend

        def make_attend(layer_cache):
            layer_k, layer_v = layer_cache
            return patterns.cached_chunk(cache, layer_k, layer_v, start, kv_mask, backend)

        tokens, (k, v) = self._run_causal(tokens, context, modulation, rope, make_attend, (cache.k, cache.v))
        return self._head(tokens, temb, grid), ChunkKV(k=k.astype(cache.k.dtype), v=v.astype(cache.v.dtype))

    def with_context(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any,
                     cache: KVCache) -> jax.Array:
        """Block i of x attends to the cache's frames before it (constants) and its own K/V: with the cache
        filled by chunk()/write_chunk() on the same inputs, every chunk() output at once."""
        tokens, temb, modulation, context, grid = self._embed(hidden_states, timestep, encoder_hidden_states)
        self._check_cache(cache, grid)
        if cache.rolling or cache.num_slots < grid[0]:
            raise ValueError(f"with_context needs a cache holding all {grid[0]} frames (slot = frame); this one "
                             f"has {cache.num_slots} {'rolling ' if cache.rolling else ''}slots: make it with "
                             "empty_cache(..., max_frames >= F, rolling=False)")
        bounds = self._bounds(grid[0], remainder_first=True)
        config, backend = self.config, self.attention_backend

        def make_attend(layer_cache):
            layer_k, layer_v = layer_cache
            return patterns.with_context(config, cache, layer_k, layer_v, bounds, backend)

        tokens, _ = self._run_causal(tokens, context, modulation, self._rope(grid), make_attend, (cache.k, cache.v))
        return self._head(tokens, temb, grid)

    def teacher_forcing(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any, clean_x: Any,
                        aug_t: Any = None) -> jax.Array:
        """FastVideo's teacher forcing (its `clean_x`): noisy [B, C, F, H, W] at `timestep` ([B] or [B, F])
        denoised with the clean latent [B, C, F, H, W] as context -> [B, Cout, F, H, W].

        One sequence [clean | noisy] of 2F frames: clean frame j and noisy frame j share RoPE position j and
        the clean frames are modulated by `aug_t` (default 0, FastVideo's: the clean copy is the data itself);
        attention is patterns.teacher_forcing (noisy block i sees the clean frames before it, never its own
        noisy past); only the noisy half reaches the head."""
        if self.config.windowed:
            raise ValueError(f"teacher forcing attends to the whole clean history; this causal Wan has a window "
                             f"(local_attn_size {self.config.local_attn_size}), and FastVideo has no windowed "
                             "teacher forcing: use local_attn_size -1")
        x, clean = jnp.asarray(hidden_states), jnp.asarray(clean_x)
        if clean.shape != x.shape:
            raise ValueError(f"clean_x has shape {clean.shape}; it must match hidden_states {x.shape}")
        grid = self._grid(x.shape)
        t = _per_frame(timestep, x.shape[0], grid[0])
        aug = jnp.zeros_like(t) if aug_t is None else _per_frame(aug_t, x.shape[0], grid[0]).astype(t.dtype)
        tokens, temb, modulation, context, grid = self._embed(x, t, encoder_hidden_states)
        _, clean_modulation = self.condition_embedder.time(aug)
        # Tokens are frame-major, so per-frame modulation [B, 2F, 6, D] lines up with [clean | noisy].
        tokens = constrain(jnp.concatenate([self._tokens(clean), tokens], axis=1), ACT_AXES)
        modulation = jnp.concatenate([clean_modulation, modulation], axis=1)
        cos, sin = self._rope(grid)
        rope = tuple(constrain(jnp.concatenate([a, a]), ROPE_AXES) for a in (cos, sin))
        bounds = self._bounds(grid[0], remainder_first=False)
        attend = patterns.teacher_forcing(bounds, grid[0], grid[1] * grid[2], self.attention_backend)
        tokens, _ = self._run_causal(tokens, context, modulation, rope, lambda _: attend, None)
        return self._head(tokens[:, tokens.shape[1] // 2:], temb, grid)

    # ------------------------------------------------------------------ helpers

    def empty_cache(self, batch: int, max_frames: int, latent_hw: tuple[int, int], dtype: Any = None,
                    rolling: bool = True) -> KVCache:
        """A KV cache for this model (fvjax.families.wan.causal.cache.empty_cache; dtype: the compute dtype)."""
        return empty_cache(self.config, batch, max_frames, latent_hw, self.dtype if dtype is None else dtype,
                           rolling)

    def _bounds(self, num_frames: int, remainder_first: bool):
        bounds = block_bounds(num_frames, self.config.num_frames_per_block, remainder_first)
        if self.config.windowed:
            largest = max(end - start for start, end in bounds)
            if largest > self.config.local_attn_size - self.config.sink_size:
                raise ValueError(f"a {largest}-frame block does not fit the window (local_attn_size "
                                 f"{self.config.local_attn_size}, sink_size {self.config.sink_size})")
        return bounds

    def _rope(self, grid, start=None):
        cfg = self.config
        if start is None:
            cos, sin = rope_cos_sin(cfg.attention_head_dim, grid, max_positions=cfg.rope_max_seq_len)
        else:
            cos, sin = rope_cos_sin_at(cfg.attention_head_dim, grid, start, max_positions=cfg.rope_max_seq_len)
        return constrain(cos, ROPE_AXES), constrain(sin, ROPE_AXES)

    def _check_cache(self, cache: KVCache, grid) -> None:
        cfg = self.config
        want = (cfg.num_layers, cfg.num_attention_heads, cfg.attention_head_dim, grid[1] * grid[2])
        have = (cache.k.shape[0], cache.k.shape[3], cache.k.shape[4], cache.tokens_per_frame)
        if want != have:
            raise ValueError(f"the KV cache (layers, heads, head_dim, tokens per frame) = {have} does not match "
                             f"the model and latent {want}")

    def _run_causal(self, tokens, context, modulation, rope, make_attend: Callable, layer_inputs):
        """The stacked blocks under one scan; `make_attend(layer inputs)` -> that layer's pattern. Returns
        (tokens, the patterns' side outputs stacked over layers)."""
        graphdef, stacked = nnx.split(self.blocks)

        def body(carry, xs):
            layer_state, inputs = xs
            block = nnx.merge(graphdef, layer_state)
            return block.forward(carry, context, modulation, rope, make_attend(inputs))

        return jax.lax.scan(remat(body, self.remat_policy), tokens, (stacked, layer_inputs), unroll=self.scan_unroll)


def _per_frame(timestep: Any, batch: int, num_frames: int) -> jax.Array:
    """A timestep given as a scalar, [B] or [B, F] as [B, F]."""
    t = jnp.asarray(timestep)
    return jnp.broadcast_to(t[:, None] if t.ndim == 1 else t, (batch, num_frames))


def abstract_model(config: CausalWanConfig, param_dtype=jnp.float32, **model_kwargs) -> CausalWanTransformer:
    return nnx.eval_shape(lambda: CausalWanTransformer(config, rngs=nnx.Rngs(0), param_dtype=param_dtype,
                                                       **model_kwargs))


def model_from_params(config: CausalWanConfig, params: dict, **model_kwargs) -> CausalWanTransformer:
    from fvjax.models import params as trees

    return trees.model_from_params(abstract_model(config, **model_kwargs), params)

"""Wan's 3-axis rotary position embedding (frame | height | width), interleaved-pair convention.

The head dim d is split into axis chunks [t | h | w] with h = w = 2*(d//6) and t = d - 2h
(44/42/42 for d = 128). Each axis has its own frequency schedule theta^(-2j/chunk). Tables are built
on the host in float64 and stored as fp32 (as Diffusers does), so they are exact constants of the
compiled program. Pairs (x[2j], x[2j+1]) are rotated by the angle of pair j (complex multiplication),
not the Llama rotate-half layout.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

ROPE_THETA = 10000.0


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Head-dim chunk sizes (t, h, w) used by the frame, height and width axes."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


@functools.lru_cache(maxsize=64)
def _axis_angles(dim: int, max_positions: int, theta: float) -> np.ndarray:
    """[max_positions, dim/2] angles pos * theta^(-2j/dim), float64."""
    exponents = np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim
    freqs = 1.0 / (theta ** exponents)
    return np.outer(np.arange(max_positions, dtype=np.float64), freqs)


def _check_grid(grid: tuple[int, int, int], start_frame: int, max_positions: int) -> None:
    num_frames, height, width = grid
    if start_frame + num_frames > max_positions or height > max_positions or width > max_positions:
        raise ValueError(f"token grid {grid} (start frame {start_frame}) exceeds rope_max_seq_len "
                         f"{max_positions}")


def rope_angles(head_dim: int, grid: tuple[int, int, int], *, max_positions: int = 1024,
                start_frame: int = 0, theta: float = ROPE_THETA) -> np.ndarray:
    """Angles [F*H*W, head_dim/2] (float64) for the post-patch token grid (F, H, W), row-major tokens.

    `start_frame` offsets the frame positions (for chunked / KV-cache inference later).
    """
    num_frames, height, width = grid
    t_dim, h_dim, w_dim = axis_dims(head_dim)
    _check_grid(grid, start_frame, max_positions)
    at = _axis_angles(t_dim, max_positions, theta)[start_frame:start_frame + num_frames]
    ah = _axis_angles(h_dim, max_positions, theta)[:height]
    aw = _axis_angles(w_dim, max_positions, theta)[:width]
    at = np.broadcast_to(at[:, None, None, :], (num_frames, height, width, at.shape[-1]))
    ah = np.broadcast_to(ah[None, :, None, :], (num_frames, height, width, ah.shape[-1]))
    aw = np.broadcast_to(aw[None, None, :, :], (num_frames, height, width, aw.shape[-1]))
    return np.concatenate([at, ah, aw], axis=-1).reshape(num_frames * height * width, head_dim // 2)


def rope_tables(head_dim: int, grid: tuple[int, int, int], **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each [L, head_dim/2] fp32 on the host: one value per rotated pair."""
    angles = rope_angles(head_dim, grid, **kwargs)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope_cos_sin(head_dim: int, grid: tuple[int, int, int], *, max_positions: int = 1024,
                 start_frame: int = 0, theta: float = ROPE_THETA) -> tuple[jax.Array, jax.Array]:
    """Same values as `rope_tables`, assembled in the graph from three small per-axis tables.

    cos/sin of the concatenated angles is the concatenation of per-axis cos/sin, so only
    [F, t/2] + [H, h/2] + [W, w/2] constants enter the compiled program (not [L, D/2]).
    """
    num_frames, height, width = grid
    _check_grid(grid, start_frame, max_positions)
    dims = axis_dims(head_dim)
    spans = ((start_frame, num_frames), (0, height), (0, width))
    out = []
    for fn in (np.cos, np.sin):
        parts = []
        for axis, (dim, (start, count)) in enumerate(zip(dims, spans)):
            table = jnp.asarray(fn(_axis_angles(dim, max_positions, theta)[start:start + count])
                                .astype(np.float32))
            shape = [1, 1, 1, dim // 2]
            shape[axis] = count
            parts.append(jnp.broadcast_to(table.reshape(shape), (num_frames, height, width, dim // 2)))
        out.append(jnp.concatenate(parts, axis=-1).reshape(num_frames * height * width, head_dim // 2))
    return out[0], out[1]


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate pairs of x [B, L, H, D] by (cos, sin) [L, D/2]; arithmetic in fp32, result in x's dtype."""
    b, l, h, d = x.shape
    pairs = x.astype(jnp.float32).reshape(b, l, h, d // 2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
    return out.reshape(b, l, h, d).astype(x.dtype)

"""Wan's RoPE tables for a chunk whose first latent frame is a traced `start_frame`: the same values as
fvjax/families/wan/rope.py's tables at that offset (its per-axis host tables, the frame rows taken with a
dynamic slice)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.families.wan.rope import ROPE_THETA, _axis_angles, axis_dims


def rope_cos_sin_at(head_dim: int, grid: tuple[int, int, int], start_frame: jax.Array, *,
                    max_positions: int = 1024, theta: float = ROPE_THETA) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) [F*H*W, head_dim/2] for frames start_frame .. start_frame + F - 1 (start_frame may be
    traced; positions past `max_positions` clamp, so callers check the range on the host)."""
    num_frames, height, width = grid
    dims = axis_dims(head_dim)
    start = jnp.asarray(start_frame, jnp.int32)
    out = []
    for fn in (np.cos, np.sin):
        parts = []
        for axis, (dim, count) in enumerate(zip(dims, grid)):
            table = jnp.asarray(fn(_axis_angles(dim, max_positions, theta)).astype(np.float32))
            rows = jax.lax.dynamic_slice_in_dim(table, start, count) if axis == 0 else table[:count]
            shape = [1, 1, 1, dim // 2]
            shape[axis] = count
            parts.append(jnp.broadcast_to(rows.reshape(shape), (num_frames, height, width, dim // 2)))
        out.append(jnp.concatenate(parts, axis=-1).reshape(num_frames * height * width, head_dim // 2))
    return out[0], out[1]

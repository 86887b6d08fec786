"""Random keys inside a pure step: one key per named purpose, so adding a use of randomness never shifts
the streams of the others."""
from __future__ import annotations

import math
import zlib

import jax
import jax.numpy as jnp


def purpose_key(key: jax.Array, purpose: str) -> jax.Array:
    """A key for one named use inside a step (noise, timesteps, ...): independent streams by name."""
    return jax.random.fold_in(key, zlib.crc32(purpose.encode()) & 0x7FFFFFFF)


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """float32 `jax.random.normal(key, shape)`, drawn flat and reshaped: the same numbers (threefry counts
    the elements in row-major order, partitionable or not), but XLA:CPU compiles a 5-D draw in 1-3 s
    against ~0.15 s for a flat one (the per-axis counter arithmetic)."""
    return jax.random.normal(key, (math.prod(shape),), jnp.float32).reshape(shape)

"""Random keys inside a pure step: one key per named purpose, so adding a use of randomness never shifts
the streams of the others."""
from __future__ import annotations

import zlib

import jax


def purpose_key(key: jax.Array, purpose: str) -> jax.Array:
    """A key for one named use inside a step (noise, timesteps, ...): independent streams by name."""
    return jax.random.fold_in(key, zlib.crc32(purpose.encode()) & 0x7FFFFFFF)

"""The vocabulary of a Diffusers (or transformers) key map: one `TensorKey` per stored tensor, naming the
fvjax leaf it fills and the layout transform between the two.

A family's key map is the list of its `TensorKey`s for a config, in the reference implementation's
`state_dict()` order (a family writes checkpoints in that order). Tensors of a module stacked over layers
fill one row (`layer`) of a leaf with a leading layers axis; `fvjax_shape` is the shape of that row.

Transforms: COPY as is; LINEAR a torch Linear `weight` (out, in) <-> a kernel (in, out); PATCH a
convolution weight (out, in, k...) <-> a dense kernel (in * prod(k), out) with features ordered (in, k...).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

COPY, LINEAR, PATCH = "copy", "linear", "patch"


@dataclasses.dataclass(frozen=True)
class TensorKey:
    diffusers_key: str
    path: tuple[str, ...]
    layer: int | None
    torch_shape: tuple[int, ...]
    fvjax_shape: tuple[int, ...]  # per layer (without the stacked axis)
    transform: str = COPY

    def to_fvjax(self, arr: np.ndarray) -> np.ndarray:
        """Reference layout -> fvjax layout (a view where numpy allows; callers copy into their buffer)."""
        if self.transform == LINEAR:
            return arr.T
        if self.transform == PATCH:
            return arr.reshape(arr.shape[0], -1).T
        return arr

    def to_diffusers(self, arr: np.ndarray) -> np.ndarray:
        """fvjax layout -> reference layout, C-contiguous (ready to be written as bytes)."""
        if self.transform == LINEAR:
            return np.ascontiguousarray(arr.T)
        if self.transform == PATCH:
            return np.ascontiguousarray(arr.T).reshape(self.torch_shape)
        return np.ascontiguousarray(arr)

    @property
    def dotted_path(self) -> str:
        return "/".join(self.path)


def linear(key: str, path: tuple[str, ...], layer: int | None, d_in: int, d_out: int,
           bias: bool = True) -> list[TensorKey]:
    """A torch Linear `key` (weight [and bias]) -> an fvjax Dense at `path` (kernel [and bias])."""
    keys = [TensorKey(f"{key}.weight", path + ("kernel",), layer, (d_out, d_in), (d_in, d_out), LINEAR)]
    if bias:
        keys.append(TensorKey(f"{key}.bias", path + ("bias",), layer, (d_out,), (d_out,)))
    return keys


def keys_by_leaf(keys: Iterable[TensorKey]) -> dict[tuple[str, ...], list[TensorKey]]:
    """The tensors that fill each fvjax leaf (one, or one per layer for stacked leaves), in key order."""
    groups: dict[tuple[str, ...], list[TensorKey]] = {}
    for k in keys:
        groups.setdefault(k.path, []).append(k)
    return groups


def leaf_shape(group: list[TensorKey]) -> tuple[int, ...]:
    """The full shape of the leaf a group of keys fills (stacked leaves: one row per key)."""
    first = group[0]
    return ((len(group),) if first.layer is not None else ()) + first.fvjax_shape


def leaf_shapes(keys: Iterable[TensorKey]) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Full fvjax leaf shapes, in key-map order."""
    return {path: leaf_shape(group) for path, group in keys_by_leaf(keys).items()}

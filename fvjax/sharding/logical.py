"""Logical axis names -> mesh axes. Rules are data: a sequence of (logical_name, mesh_axes) pairs.

Model code names every parameter and activation dimension with a logical name ("embed", "mlp",
"act_seq", ...); which mesh axis (if any) shards it is decided here, by the active rules, never in the
model. `constrain` is the one place activations get sharding constraints.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalAxes = tuple[str | None, ...]
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "fvjax_logical_rules", default=None)


def logical_to_spec(names: LogicalAxes, rules: Rules, mesh: Mesh | None = None) -> PartitionSpec:
    """Resolve logical names to a PartitionSpec; a mesh axis is used at most once per array.

    Mesh axes of size 1 (or absent from `mesh`) are dropped, so one rule set serves every mesh shape.
    """
    table: dict[str, tuple[str, ...]] = {}
    for logical, mesh_axes in rules:
        if logical in table:
            continue  # first rule wins, as in MaxText
        if mesh_axes is None:
            table[logical] = ()
        elif isinstance(mesh_axes, str):
            table[logical] = (mesh_axes,)
        else:
            table[logical] = tuple(mesh_axes)
    used: set[str] = set()
    spec: list[str | tuple[str, ...] | None] = []
    for name in names:
        axes = []
        for axis in table.get(name, ()) if name is not None else ():
            if axis in used:
                continue
            if mesh is not None and mesh.shape.get(axis, 1) == 1:
                continue
            axes.append(axis)
            used.add(axis)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*spec)


@contextlib.contextmanager
def use_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Make (mesh, rules) active for `constrain` calls traced inside this context."""
    token = _ACTIVE.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_rules() -> tuple[Mesh, Rules] | None:
    """The (mesh, rules) made active by `use_rules`, or None (used by kernels that need shard_map)."""
    return _ACTIVE.get()


def constrain(x: jax.Array, names: LogicalAxes) -> jax.Array:
    """Sharding constraint on an activation by logical names; identity when no rules are active."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(names, rules, mesh)))

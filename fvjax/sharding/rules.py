"""Logical-axis rule presets (data) and parameter shardings for a mesh plan.

Presets (first matching rule wins; mesh axes of size 1 are dropped by `logical_to_spec`):
    fsdp     parameters split over `fsdp` along their model dimension ("embed"); batch over replica x fsdp
    fsdp+sp  as fsdp, parameters also split over `sp`; tokens ("act_seq") split over `sp`
    tp       as fsdp+sp, plus attention heads and MLP columns over `tp`
`rules_for(plan)` picks the preset the plan needs. A dimension that a mesh axis does not divide evenly
stays unsplit (`param_specs`), so every spec is valid for `jax.device_put` / jit shardings.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from fvjax.sharding.logical import Rules, logical_to_spec
from fvjax.sharding.mesh import MeshPlan

_COMMON: Rules = (
    ("layers", None),
    ("act_batch", ("replica", "fsdp")),
    ("act_text", None),
    ("act_embed", None),
    ("act_head_dim", None),
)

FSDP_RULES: Rules = _COMMON + (
    ("embed", "fsdp"),
)

FSDP_SP_RULES: Rules = _COMMON + (
    ("embed", ("fsdp", "sp")),
    ("act_seq", "sp"),
)

TP_RULES: Rules = _COMMON + (
    ("embed", ("fsdp", "sp")),
    ("heads", "tp"),
    ("mlp", "tp"),
    ("act_seq", "sp"),
    ("act_heads", "tp"),
    ("act_mlp", "tp"),
)

RULE_PRESETS: dict[str, Rules] = {"fsdp": FSDP_RULES, "fsdp+sp": FSDP_SP_RULES, "tp": TP_RULES}


def rules_for(plan: MeshPlan) -> tuple[str, Rules]:
    name = "tp" if plan.tp > 1 else "fsdp+sp" if plan.sp > 1 else "fsdp"
    return name, RULE_PRESETS[name]


def _axes_of(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def spec_for(names: tuple, shape: tuple[int, ...], rules: Rules, plan: MeshPlan):
    """PartitionSpec for one array; dims the mesh axes do not divide are left unsplit."""
    from jax.sharding import PartitionSpec

    sizes = plan.axis_sizes
    spec = logical_to_spec(names, rules, plan.abstract_mesh())
    entries = list(spec) + [None] * (len(shape) - len(spec))
    out = []
    for dim, entry in zip(shape, entries):
        ways = math.prod(sizes[a] for a in _axes_of(entry))
        out.append(entry if ways > 1 and dim % ways == 0 else None)
    return PartitionSpec(*out)


def param_specs(logical_axes: dict, shapes: dict, rules: Rules, plan: MeshPlan) -> dict:
    """Tree of PartitionSpecs (same structure as the params) from logical axes and shapes."""
    import jax

    return jax.tree_util.tree_map(
        lambda names, leaf: spec_for(tuple(names), tuple(leaf.shape), rules, plan),
        logical_axes, shapes, is_leaf=lambda x: isinstance(x, tuple))


def per_device_elements(shape: tuple[int, ...], spec, plan: MeshPlan) -> int:
    sizes = plan.axis_sizes
    entries = list(spec) + [None] * (len(shape) - len(spec))
    return int(np.prod([dim // math.prod(sizes[a] for a in _axes_of(e)) for dim, e in zip(shape, entries)],
                       dtype=np.int64))


def per_device_count(shapes: dict, specs: dict, plan: MeshPlan) -> int:
    """Scalars of the tree held by one device under `specs` (the largest shard; shards are even)."""
    import jax
    from jax.sharding import PartitionSpec

    leaves = jax.tree_util.tree_leaves(shapes)
    spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    return sum(per_device_elements(tuple(leaf.shape), spec, plan) for leaf, spec in zip(leaves, spec_leaves))

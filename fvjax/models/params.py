"""Parameter trees of NNX models as pure nested dicts, the same for every family.

- `abstract_params(model)`: the `nnx.Param` leaves of an (abstract) model as a pure dict;
- `param_logical_axes(abstract_model)`: the same tree holding each leaf's logical axis names, read from
  the `logical_axes` metadata every parameter carries (`fvjax.models.layers.param`); a leaf of a module
  stacked with `nnx.vmap` has one more dimension than its names: that leading dimension is "layers";
- `model_from_params(abstract_model, params)`: a model whose parameters are `params` (no random init);
- `nest` / `flatten` between {path tuple: leaf} and the nested dict; `count_params`.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

LAYERS = "layers"


def params_of(model: nnx.Module) -> dict:
    """The model's parameters as a pure nested dict of arrays (ShapeDtypeStructs for an abstract model)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


abstract_params = params_of


def param_logical_axes(model: nnx.Module) -> dict:
    """Pure dict (the params' structure) of logical axis-name tuples."""
    out: dict = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = tuple(variable.get_metadata().get("logical_axes"))
        shape = variable.get_value().shape
        if len(axes) == len(shape) - 1:   # stacked over layers by nnx.vmap
            axes = (LAYERS,) + axes
        if len(axes) != len(shape):
            raise AssertionError(f"logical axes {axes} do not match shape {shape} at {path}")
        nest_into(out, tuple(str(p) for p in path), axes)
    return out


def model_from_params(abstract_model: nnx.Module, params: dict) -> nnx.Module:
    """`abstract_model` (from nnx.eval_shape) with `params` as its parameters; arrays used as given."""
    graphdef, state = nnx.split(abstract_model)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def count_params(tree: Any) -> int:
    """Number of scalars in a tree of arrays or ShapeDtypeStructs."""
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree)))


def nest_into(tree: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def nest(flat: dict[tuple, Any]) -> dict:
    """{("a", "b"): x} -> {"a": {"b": x}} (the NNX pure-dict layout; path parts kept as they are)."""
    tree: dict = {}
    for path, value in flat.items():
        nest_into(tree, path, value)
    return tree


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    """Inverse of `nest` (leaves are whatever is not a dict)."""
    flat: dict[tuple, Any] = {}
    for name, value in tree.items():
        path = prefix + (name,)
        if isinstance(value, dict):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat

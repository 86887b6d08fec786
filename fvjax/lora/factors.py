"""LoRA factors as data beside the frozen base.

A LoRA role's model is the family's model with a `LoraFactors` attached to each adapted Dense
(`Dense.lora`): its output gains (x @ A) * scale @ B, A [in, r] and B [r, out] (a leading layers axis
on stacked blocks), so the adapted kernel W is read as it is and W + scale * A @ B is never formed per
step (benchmarks/README.md, LoRA section: faster on the training step and no full-size temporary). The
role's trainable params are only the factor tree ({<Dense path>: {"lora": {"a", "b"}}}); `with_factors`
nests it into the frozen base tree (no copy: the base leaves are shared) for `nnx.merge`.

Logical axes: A takes the kernel's input axis and B its output axis, the rank axis is replicated, so the
factors shard by the same rules as the kernel they adapt. Initialisation as FastVideo's LoRA layers: A
kaiming-uniform (a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), B zero, so training starts from the base.
"""
from __future__ import annotations

import math
import zlib
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fvjax.lora.targets import LoraTarget
from fvjax.models import matmuls
from fvjax.models.params import nest_into, params_of

LORA = "lora"


class LoraFactors(nnx.Module):
    def __init__(self, target: LoraTarget, rank: int, scale: float, *, key: jax.Array, param_dtype=jnp.float32,
                 dtype=jnp.float32):
        lead = () if target.layers is None else (target.layers,)
        bound = 1.0 / math.sqrt(target.d_in)
        self.a = nnx.Param(jax.random.uniform(key, lead + (target.d_in, rank), param_dtype, -bound, bound),
                           logical_axes=(target.in_axis, None))
        self.b = nnx.Param(jnp.zeros(lead + (rank, target.d_out), param_dtype), logical_axes=(None, target.out_axis))
        self.scale = scale
        self.dtype = dtype

    def __call__(self, x2: jax.Array) -> jax.Array:
        """The delta for x2 [rows, in] (the Dense's compute dtype)."""
        h = matmuls.matmul(x2, self.a[...].astype(self.dtype)) * jnp.asarray(self.scale, self.dtype)
        return matmuls.matmul(h, self.b[...].astype(self.dtype))


def _walk(model, path: tuple[str, ...]):
    for part in path:
        model = getattr(model, part)
    return model


def _target_key(key: jax.Array, target: LoraTarget) -> jax.Array:
    return jax.random.fold_in(key, zlib.crc32("/".join(target.path).encode()))


def attach_lora(abstract_model: nnx.Module, targets: Iterable[LoraTarget], rank: int, scale: float) -> nnx.Module:
    """`abstract_model` (nnx.eval_shape) with abstract LoraFactors on the target Dense layers (in place)."""
    for target in targets:
        dense = _walk(abstract_model, target.path)
        param_dtype = dense.kernel.get_value().dtype
        dense.lora = nnx.eval_shape(lambda: LoraFactors(target, rank, scale, key=jax.random.key(0),
                                                        param_dtype=param_dtype, dtype=dense.dtype))
    return abstract_model


def init_factors(targets: Iterable[LoraTarget], rank: int, key: jax.Array, param_dtype) -> dict:
    """The factor tree's initial values (call under jax.jit with the factors' shardings)."""
    tree: dict = {}
    for target in targets:
        factors = LoraFactors(target, rank, 1.0, key=_target_key(key, target), param_dtype=param_dtype)
        nest_into(tree, target.path + (LORA,), params_of(factors))
    return tree


def with_factors(base: dict, factors: dict) -> dict:
    """The full param tree of the LoRA model: `base` with the factor subtrees nested in (new dicts along
    the factor paths only; every array is used as given)."""
    out = dict(base)
    for name, sub in factors.items():
        out[name] = sub if name == LORA else with_factors(base[name], sub)
    return out


def factors_of(full: dict) -> dict:
    """The factor subtrees of a full LoRA-model tree (inverse of `with_factors`)."""
    out = {}
    for name, sub in full.items():
        if name == LORA:
            out[name] = sub
        elif isinstance(sub, dict):
            inner = factors_of(sub)
            if inner:
                out[name] = inner
    return out


def select_like(tree: dict, like: dict) -> dict:
    """The part of `tree` with the structure of `like` (e.g. the factors' logical axes)."""
    return {k: select_like(tree[k], v) if isinstance(v, dict) else tree[k] for k, v in like.items()}


def factor_pairs(factors: dict, targets: Iterable[LoraTarget]):
    """(target, A, B) per target, A [.., in, r] and B [.., r, out] as stored."""
    for target in targets:
        node = leaf_at(factors, target.path + (LORA,))
        yield target, node["a"], node["b"]


def merged_params(base: dict, factors: dict, targets: Iterable[LoraTarget], scale: float) -> dict:
    """`base` with kernel + scale * A @ B on every target (fp32 sums, stored in the kernel's dtype): full
    weights for export or for a generation that does not keep the adapters apart."""
    out = base
    for target, a, b in factor_pairs(factors, targets):
        kernel_path = target.path + ("kernel",)
        kernel = np.asarray(leaf_at(base, kernel_path))
        delta = np.matmul(np.asarray(a, np.float32), np.asarray(b, np.float32)) * np.float32(scale)
        out = replaced(out, kernel_path, (kernel.astype(np.float32) + delta).astype(kernel.dtype))
    return out


def leaf_at(tree: dict, path: tuple):
    for part in path:
        tree = tree[part]
    return tree


def replaced(tree: dict, path: tuple, value) -> dict:
    """`tree` with the leaf at `path` replaced (new dicts along the path only)."""
    out = dict(tree)
    out[path[0]] = value if len(path) == 1 else replaced(tree[path[0]], path[1:], value)
    return out

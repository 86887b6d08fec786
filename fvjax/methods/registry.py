"""The registry of training methods (looked up by `recipe.method`).

Built-in methods are named below and imported on first use; other packages add theirs with an entry point
in the group "fvjax.methods" or with `register_method(spec)` (fvjax/plugins.py).
"""
from __future__ import annotations

from fvjax.errors import fail
from fvjax.methods.api import MethodSpec
from fvjax.plugins import Registry

BUILTIN = {"dmd2": "fvjax.methods.dmd2:METHOD", "finetune": "fvjax.methods.finetune:METHOD",
           "self_forcing": "fvjax.methods.self_forcing:METHOD", "kd": "fvjax.methods.kd:METHOD",
           "dfsft": "fvjax.methods.dfsft:METHOD", "tfsft": "fvjax.methods.dfsft:TEACHER_FORCING_METHOD",
           "causal_cd": "fvjax.methods.causal_cd:METHOD"}


_METHODS: Registry[MethodSpec] = Registry("method", "fvjax.methods", BUILTIN, MethodSpec, lambda m: m.name)
register_method = _METHODS.register


def available_methods() -> tuple[str, ...]:
    return _METHODS.names()


def get_method(name: str, where: object = None, key: str = "recipe.method") -> MethodSpec:
    method = _METHODS.find(name)
    if method is None:
        fail(where, key, f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return method

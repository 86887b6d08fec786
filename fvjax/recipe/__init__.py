"""Recipes: the YAML schema, `TrainingArgs`, loading and validation (nothing else in fvjax reads YAML).

Names are imported lazily so that `fvjax.methods` (which the loader uses) can import the small
`fvjax.recipe.fields` / `method_params` modules without a cycle.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load_recipe": "fvjax.recipe.loader", "parse_recipe": "fvjax.recipe.loader",
    "PipelineConfig": "fvjax.recipe.pipeline", "Recipe": "fvjax.recipe.schema", "RoleSpec": "fvjax.recipe.schema",
    "ExecutionMode": "fvjax.recipe.training_args", "TrainingArgs": "fvjax.recipe.training_args",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fvjax.recipe' has no attribute {name!r}")

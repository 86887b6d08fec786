"""The fully resolved recipe, value by value, with where each value came from (the recipe file, the
command line, the schema's default, fvjax's default), for the dry run: what will run, in the recipe's own
key names."""
from __future__ import annotations

import dataclasses
import enum

from fvjax.methods.registry import get_method
from fvjax.schema.params import METHOD
from fvjax.schema.pipeline_config import PIPELINE_FIELDS
from fvjax.schema.recipe import Recipe
from fvjax.schema.training_args import TRAINING_FIELDS, USED

FORMS = {"phase2": "the seed's Phase 2 form (distill:)", "phase3": "the Phase 3 form (recipe:)",
         "fastvideo_train": "FastVideo's current schema (method: _target_)"}


def _value(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return repr(value) if isinstance(value, str) else str(value)


def resolved_lines(recipe: Recipe) -> list[str]:
    prov = recipe.provenance
    rows: list[tuple[str, str, str]] = []
    # Older-schema places of the method's values (shown once, as the method's), and the loader's mirror.
    mirrors = {f"{s.section}.{s.key}" for p in get_method(recipe.method).params for s in p.sources
               if s.section != METHOD} | {"pipeline_config.dit_precision"}
    current = recipe.form == "fastvideo_train"

    def add(canonical: str, value) -> None:
        rows.append((prov.shown(canonical), _value(value), prov.origin(canonical)))

    for name, role in recipe.roles.items():
        for field in dataclasses.fields(role):
            if field.name != "name":
                add(recipe.role_key(name, field.name), getattr(role, field.name))
    for field in dataclasses.fields(recipe.method_config):
        add(f"method_config.{field.name}", getattr(recipe.method_config, field.name))
    for name, field in TRAINING_FIELDS.items():
        key = f"training.{name}"
        if field.metadata["status"] != USED or key in mirrors or (current and prov.shown(key) == key):
            continue   # (fields with no place in FastVideo's current schema are fvjax-internal there)
        add(key, getattr(recipe.training, name))
    for name, field in PIPELINE_FIELDS.items():
        if field.metadata["status"] == USED and f"pipeline_config.{name}" not in mirrors:
            add(f"pipeline_config.{name}", getattr(recipe.pipeline, name))
    width = max(len(k) + len(v) for k, v, _ in rows) + 3
    return [f"    {f'{k} = {v}':<{width}}  <- {origin}" for k, v, origin in rows]

"""Registry of model families (looked up by `recipe.family` and each role's `family`).

A family knows how to read a role's `path` into a model configuration without loading weights (for the
dry-run plan), whether the weights are on this machine, its default `flow_shift` per base model, and its
checks on `training:`. Only `wan` exists today.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from fvjax.errors import UserError, fail
from fvjax.families.wan.config import PRESETS, WanConfig


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What a role's `path` names, as far as this machine can tell without reading weights."""
    path: str
    kind: str                     # "diffusers" | "fvjax" | "preset" (random init) | "unavailable"
    config: Any | None            # the family's model config (WanConfig), None if it cannot be known
    weights_present: bool         # False: a real run cannot start (missing input)
    detail: str                   # where it was found / why it is missing


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    name: str
    resolve_model: Callable[[str, object, str], ModelSource]   # (path, where, dotted key)
    default_flow_shift: Callable[[str], float]                 # base model path -> shift
    check_training: Callable[[Any, object], None]              # (TrainingArgs, where)


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    if spec.name in _FAMILIES:
        raise KeyError(f"family {spec.name!r} is already registered")
    _FAMILIES[spec.name] = spec
    return spec


def available_families() -> tuple[str, ...]:
    return tuple(sorted(_FAMILIES))


def get_family(name: str, where: object = None, key: str = "recipe.family") -> FamilySpec:
    if name not in _FAMILIES:
        fail(where, key, f"unknown family {name!r}; available: {', '.join(available_families())}")
    return _FAMILIES[name]


# ---- wan ----

# FastVideo's pipeline-config registry: the 1.3B model maps to its 480P config (shift 3), the 14B model to
# its 720P config (shift 5). Anything else gets the 480P default.
_WAN_FLOW_SHIFT = {"Wan-AI/Wan2.1-T2V-1.3B-Diffusers": 3.0, "Wan-AI/Wan2.1-T2V-14B-Diffusers": 5.0}


def _wan_default_flow_shift(model_path: str) -> float:
    return _WAN_FLOW_SHIFT.get(model_path.rstrip("/"), 3.0)


def _wan_resolve(path: str, where: object, key: str) -> ModelSource:
    from fvjax.weights.paths import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, resolve

    if path in PRESETS and "/" not in path and not Path(path).exists():
        return ModelSource(path, "preset", PRESETS[path], True, "built-in preset, random initialisation")
    try:
        location = resolve(path, where=f"{where}: {key}" if where else key)
    except UserError as err:
        preset = PRESETS.get(path)
        note = " (architecture from the built-in preset)" if preset else ""
        return ModelSource(path, "unavailable", preset, False, err.message + note)
    if location.kind == "fvjax":
        from fvjax.weights.fvjax_dir import read_fvjax_config
        config = read_fvjax_config(location.directory)[0]
        return ModelSource(path, "fvjax", config, True, f"fvjax weights at {location.directory}")
    config = WanConfig.from_json_file(location.directory / "config.json")
    has_weights = any((location.directory / name).is_file() for name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME))
    detail = f"Diffusers transformer at {location.directory}"
    if not has_weights:
        detail += f" has no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}"
    return ModelSource(path, "diffusers", config, has_weights, detail)


def _wan_check_training(training: Any, where: object) -> None:
    # FastVideo's Wan family refuses to build without a seed.
    if training.seed is None:
        fail(where, "training.seed", "missing; Wan training needs a seed (FastVideo recipes use e.g. 1000)")


WAN = register_family(FamilySpec(
    name="wan",
    resolve_model=_wan_resolve,
    default_flow_shift=_wan_default_flow_shift,
    check_training=_wan_check_training,
))

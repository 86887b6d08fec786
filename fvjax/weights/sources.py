"""What a role's `path` names, for any family, without reading tensors: a built-in preset, an fvjax
weights directory, a Diffusers transformer (its config.json), or nothing usable here (and why)."""
from __future__ import annotations

from pathlib import Path

from fvjax.errors import UserError, fail
from fvjax.families.api import Family, ModelSource
from fvjax.families.registry import all_families
from fvjax.io.json_file import read_json
from fvjax.weights.fvjax_dir import read_fvjax_config
from fvjax.weights.paths import CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, resolve


def resolve_model(family: Family, path: str, where: object, key: str) -> ModelSource:
    if path in family.presets and "/" not in path and not Path(path).exists():
        return ModelSource(path, "preset", family.presets[path], True, "built-in preset, random initialisation")
    try:
        location = resolve(path, where=f"{where}: {key}" if where else key, transformers=family.accepted_classes)
    except UserError as err:
        preset = family.presets.get(path)
        note = " (architecture from the built-in preset)" if preset else ""
        return ModelSource(path, "unavailable", preset, False, err.message + note)
    if location.kind == "fvjax":
        config, raw, manifest = read_fvjax_config(location.directory)
        if manifest.get("family") != family.name:
            written = all_families().get(manifest.get("family"))
            if written is None or written.kin != family.kin:
                fail(where, key, f"{path} holds {manifest.get('family')} weights; this role is of the {family.name} "
                     "family")
            config = family.config_from_diffusers(raw, location.directory / CONFIG_NAME)   # a variant's
        return ModelSource(path, "fvjax", config, True, f"fvjax weights at {location.directory}")
    config = family.config_from_diffusers(read_json(location.directory / CONFIG_NAME),
                                          location.directory / CONFIG_NAME)
    has_weights = any((location.directory / name).is_file() for name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME))
    detail = f"Diffusers transformer at {location.directory}"
    if not has_weights:
        detail += f" has no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}"
    return ModelSource(path, "diffusers", config, has_weights, detail)

"""The LoRA conversions behind `python -m fvjax.convert`: a training checkpoint's LoRA role to a Diffusers
LoRA file, and a LoRA file merged into full weights (fvjax or Diffusers format)."""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from fvjax.errors import fail


def merge_lora_into_weights(src: str, lora: str, dst: str, out_format: str, *, strength: float = 1.0,
                            dtype: np.dtype | None = None) -> Path:
    """Full weights `src` (Diffusers or fvjax) + the LoRA file `lora` -> a new weights directory `dst`."""
    from fvjax.io.atomic import atomic_directory
    from fvjax.lora.loading import merge_lora_file
    from fvjax.lora.peft_file import read_peft_lora
    from fvjax.weights.diffusers_writer import write_diffusers_dir
    from fvjax.weights.fvjax_dir import write_fvjax_dir
    from fvjax.weights.loading import family_at, load_params

    loaded = read_peft_lora(lora, where="--lora")   # every check before --dst is created
    family = family_at(src, where="--src")
    config, params = load_params(src, dtype, where="--src", family=family)
    merged = merge_lora_file(jax.device_get(params), loaded, family, config, strength)
    del params
    with atomic_directory(dst) as tmp:
        if out_format == "fvjax":
            write_fvjax_dir(tmp, family, config, merged, source=f"{src} + LoRA {loaded.path} (x{strength:g})")
        else:
            write_diffusers_dir(tmp, family, config, merged)
    return Path(dst)


def checkpoint_lora(checkpoint: str, role: str, dst: str, *, ema: bool = False) -> Path:
    """The LoRA factors of `role` (or its EMA) in a training checkpoint -> a Diffusers LoRA file in `dst`."""
    from fvjax.families.registry import get_family
    from fvjax.lora.build import lora_model
    from fvjax.lora.peft_file import write_peft_lora
    from fvjax.recipe import parse_recipe
    from fvjax.training.checkpoint import Checkpointer, resolve_resume

    point = resolve_resume(checkpoint)
    with Checkpointer(point.root, read_only=True) as ckpt:
        restored = ckpt.restore(point.step, verify=False)
    where = f"{point.path}: meta"
    if not restored.recipe_text:
        fail(where, "recipe_text", "missing; the checkpoint does not say which LoRA it holds")
    recipe = parse_recipe(restored.recipe_text, where)
    if role not in recipe.roles:
        fail("--role", None, f"{role!r} is not a role of {point.path} (its roles: {', '.join(recipe.roles)})")
    spec = recipe.roles[role]
    if spec.lora is None:
        fail("--role", None, f"{role!r} trains all its weights in {point.path} (no lora); export them with "
             "fvjax-to-diffusers from the run's output_dir/<role> instead")
    state = restored.state[role]
    factors = state["ema"] if ema else state["params"]
    if factors is None:
        fail("--ema", None, f"{role!r} keeps no EMA in {point.path}")
    family = get_family(spec.family)
    source = family.resolve_model(spec.path, where, recipe.role_key(role, "path"))
    if source.config is None:
        fail(where, recipe.role_key(role, "path"), f"{spec.path}: the architecture is not known here "
             f"({source.detail}); the LoRA's module names need it")
    lora = lora_model(family, source.config, spec.lora, np.float32, where=where, key=recipe.role_key(role, "lora"))
    return write_peft_lora(dst, list(lora.targets), jax.device_get(factors), spec.lora.rank, spec.lora.alpha)

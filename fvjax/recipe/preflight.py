"""Inputs a real run needs that are not on this machine (or not set): weights, data, validation prompts,
checkpoint to resume from. The dry-run lists them as warnings; `python -m fvjax.train` refuses to start
on any of them. Relative paths are taken from the current directory, as FastVideo does.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from fvjax.families.api import ModelSource
from fvjax.families.registry import get_family
from fvjax.methods.registry import get_method
from fvjax.schema.recipe import Recipe


@dataclasses.dataclass(frozen=True)
class Problem:
    key: str
    message: str


def resolve_sources(recipe: Recipe) -> dict[str, ModelSource]:
    where = recipe.source
    out = {}
    for name, role in recipe.roles.items():
        family = get_family(role.family)
        source = family.resolve_model(role.path, where, recipe.role_key(name, "path"))
        if role.arch and source.config is not None:   # the architecture the run builds
            source = dataclasses.replace(source, config=family.with_arch(source.config, dict(role.arch), where,
                                                                         recipe.role_key(name, "arch")))
        out[name] = source
    return out


def _exists(path: str) -> bool:
    # os.path's tests answer False for names the OS cannot even look up (too long, a NUL byte)
    return os.path.exists(os.path.expanduser(path))


def _is_file(path: str) -> bool:
    return os.path.isfile(os.path.expanduser(path))


def unwritable_directory(path: str) -> str | None:
    """Why a run could not create and write `path` (a directory), or None. Checked before training, so
    neither the dry run nor a real run meets it first as an OSError."""
    if "\x00" in path:
        return "contains a NUL byte"
    target = Path(path).expanduser().absolute()
    if any(len(part.encode()) > 255 for part in target.parts) or len(str(target).encode()) > 4095:
        return f"is longer than this file system allows ({len(str(target))} characters)"
    if target.parts[1:2] in (("proc",), ("sys",), ("dev",)):
        return f"{path!r} is under /{target.parts[1]}, not a place for files"
    if target.exists() and not target.is_dir():
        return f"{path!r} is a file; give a directory"
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, so {path!r} cannot be created"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable{'' if existing == target else f', so {path!r} cannot be created'}"
    return None


def data_problems(recipe: Recipe) -> list[Problem]:
    """training.data_path: set; every dataset root present; the data the method reads (latents and text,
    or text only) is what the files hold (read from a manifest or one parquet schema per root)."""
    from fvjax.data.sample import TEXT_ONLY_FOR_LATENTS
    from fvjax.data.sources import dataset_has_latents
    from fvjax.methods.api import TEXT_ONLY
    from fvjax.schema.data_path import data_specs

    key = "training.data_path"
    specs = data_specs(recipe.training.data_path)
    if not specs:
        return [Problem(key, "is empty; set the preprocessed dataset directory")]
    roots = list(dict.fromkeys(root for root, _ in specs))
    problems = [Problem(key, f"{root!r} does not exist on this machine") for root in roots
                if not _exists(root)]
    if problems:
        return problems
    kinds = {root: dataset_has_latents(root) for root in roots}
    text_only = [root for root, has in kinds.items() if has is False]
    if text_only and get_method(recipe.method).data_needs(recipe.method_config) != TEXT_ONLY:
        problems.append(Problem(key, f"{text_only[0]!r} {TEXT_ONLY_FOR_LATENTS}"))
    elif text_only and any(has for has in kinds.values()):
        latents = next(root for root, has in kinds.items() if has)
        problems.append(Problem(key, f"{text_only[0]!r} holds text embeddings only but {latents!r} holds latents; "
                                "the datasets of one run must be the same kind"))
    if not problems:
        problems += _latent_shape_problems(recipe, [root for root, has in kinds.items() if has])
    return problems


def _latent_shape_problems(recipe: Recipe, roots: list[str]) -> list[Problem]:
    """The recipe's video shape against the first sample of each dataset with latents: more latent frames
    than the data holds would train shorter videos than asked, another frame size would validate at a
    size the student never trained at."""
    from fvjax.data.sources import open_source
    from fvjax.errors import UserError

    t = recipe.training
    compression = get_family(recipe.family).defaults.spatial_compression
    problems = []
    for root in roots:
        try:
            latents = open_source(root)[0].latents
        except UserError as err:
            problems.append(Problem("training.data_path", err.line()))
            continue
        _, frames, height, width = latents.shape
        if t.num_latent_t > frames:
            problems.append(Problem("training.num_latent_t", f"is {t.num_latent_t} but {root!r} holds {frames} "
                                    "latent frames per sample; set num_latent_t <= that (it crops, never pads)"))
        pixels = (height * compression, width * compression)
        if (t.num_height, t.num_width) != pixels and t.num_height and t.num_width:
            problems.append(Problem("training.num_height", f"is {t.num_height} x {t.num_width} (num_width) but "
                                    f"{root!r} holds {pixels[0]} x {pixels[1]} videos (latents {height} x {width}); "
                                    "validation renders the recipe's size: make them match"))
    return problems


def model_problems(recipe: Recipe, method, sources: dict[str, ModelSource]) -> list[Problem]:
    """The method's own requirements on its roles' architectures (MethodSpec.check_models), when every role's
    config is known (a preset or a config.json on this machine)."""
    configs = {name: source.config for name, source in sources.items()}
    if method.check_models is None or any(config is None for config in configs.values()):
        return []
    from fvjax.errors import UserError
    try:
        method.check_models(recipe.method_config, configs, recipe.roles)
    except UserError as err:
        return [Problem(err.key or "models", err.message)]
    return []


def find_problems(recipe: Recipe, sources: dict[str, ModelSource] | None = None) -> list[Problem]:
    t = recipe.training
    sources = resolve_sources(recipe) if sources is None else sources
    problems: list[Problem] = []
    from fvjax.weights.hub import to_download

    for name, source in sources.items():
        if not source.weights_present and not to_download(recipe.roles[name].path):
            problems.append(Problem(recipe.role_key(name, "path"), f"weights not available on this machine: "
                                    f"{source.detail}"))
    problems += data_problems(recipe)
    if t.log_validation:
        if not t.validation_dataset_file:
            problems.append(Problem("training.validation_dataset_file", "is empty but log_validation is true"))
        elif not _is_file(t.validation_dataset_file):
            problems.append(Problem("training.validation_dataset_file",
                                    f"{t.validation_dataset_file!r} does not exist on this machine"))
        else:   # read now, so that a run the dry-run passed does not fail at its first validation
            from fvjax.data.prompt_files import read_prompts
            from fvjax.errors import UserError
            prompts_key = "training.validation_dataset_file"
            try:
                read_prompts(t.validation_dataset_file, recipe.source, prompts_key)
            except UserError as err:
                parts = [err.where] if err.where != str(recipe.source) else []
                parts += [err.key] if err.key and err.key != prompts_key else []
                problems.append(Problem(prompts_key, ": ".join(parts + [err.message])))
        if t.validation_steps <= 0:
            problems.append(Problem("training.validation_steps", "is 0 but log_validation is true; set how often "
                                    "to validate"))
        from fvjax.training.validation import NO_PIPELINE, find_pipeline
        if find_pipeline(recipe) is None:
            problems.append(Problem("training.model_path", NO_PIPELINE))
    for name in recipe.roles:
        override = recipe.init_weights_override(name)
        if override and not _is_file(override):
            problems.append(Problem(recipe.role_key(name, "transformer_override_safetensor"),
                                    f"{override!r} does not exist on this machine (a .safetensors file)"))
    if t.resume_from_checkpoint and t.resume_from_checkpoint != "latest" \
            and not _exists(t.resume_from_checkpoint):
        problems.append(Problem("training.resume_from_checkpoint",
                                f"{t.resume_from_checkpoint!r} does not exist"))
    method = get_method(recipe.method)
    problems += model_problems(recipe, method, sources)
    for key, path in method.input_files(recipe.method_config) if method.input_files else ():
        if path and not _exists(path):
            problems.append(Problem(key, f"{path!r} does not exist on this machine"))
    if not t.output_dir:
        problems.append(Problem("training.output_dir", "is empty; set where checkpoints and logs go"))
    else:
        why = unwritable_directory(t.output_dir)
        if why:
            problems.append(Problem("training.output_dir", why))
    if t.max_train_steps <= 0:
        problems.append(Problem("training.max_train_steps", "is 0; set the number of training steps"))
    if t.train_batch_size <= 0:
        problems.append(Problem("training.train_batch_size", "is 0; set the batch size per data-parallel group"))
    if t.learning_rate <= 0:
        problems.append(Problem("training.learning_rate", "is 0; the student's optimizer needs a learning rate"))
    for key in ("num_latent_t", "num_height", "num_width"):
        if getattr(t, key) <= 0:
            problems.append(Problem(f"training.{key}", "is 0; set the training video shape"))
    return problems

"""`python -m fvjax.recipe upgrade`: any recipe fvjax loads (Phase 2 `distill:`, Phase 3 `recipe:`, the design
branch's `roles:`, FastVideo's current schema) or a FastVideo legacy launch script (fvjax/recipe/legacy_script.py)
-> the same experiment written in FastVideo's current schema (spec fastvideo_v3_recipes.md):

    models.<role>: {_target_, init_from, trainable, ...}, method: {_target_, ...},
    training.{distributed, data, optimizer, loop, checkpoint, tracker, vsa, model}, callbacks.{grad_clip, ema,
    validation}, pipeline:

It is written from the loaded, resolved `Recipe`, not by rewriting the old YAML: every value that differs from
the current schema's default (as fvjax's translator, fvjax/recipe/fastvideo_train/, applies it) is written out,
in FastVideo's own keys where it has one and in the fvjax keys that translator accepts where it has none
(DMD2's legacy CFG form, mixed_precision, ...). The text is then loaded back and must give an equal
`Recipe` (==): the loader normalises what means the same (no tracker list = TensorBoard, a critic learning rate
of 0 = the student's, `max_grad_norm` null = 0, fields fvjax ignores at their defaults, ...), so a value that
has no place in the current schema is one fvjax ignores; those are left out and named in the header.

Anything else that cannot be written is a one-line error naming the key. The output is deterministic.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import yaml

from fvjax.errors import UserError, fail
from fvjax.families.registry import get_family
from fvjax.lora.spec import lora_mapping
from fvjax.methods.registry import get_method
from fvjax.recipe.fastvideo_train.callbacks import PIPELINES
from fvjax.recipe.fastvideo_train.roles import DEFAULT_FLOW_SHIFT
from fvjax.recipe.fastvideo_train.training import DEFAULTS as CURRENT_TRAINING_DEFAULTS, FALSY_MEANS, PLACES
from fvjax.recipe.yamlio import YAML_SUFFIXES
from fvjax.schema.data_path import DataPaths
from fvjax.schema.pipeline_config import PIPELINE_FIELDS
from fvjax.schema.recipe import Recipe, differences
from fvjax.schema.training_args import TRAINING_FIELDS
from fvjax.sharding.mesh import AUTO, fill_distributed

SCRIPT_SUFFIXES = (".sh", ".bash", ".slurm", ".sbatch")
FORMS = {"phase2": "Phase 2 form, distill:", "phase3": "Phase 3 form, recipe:", "design": "design-branch form, roles:",
         "fastvideo_train": "FastVideo's current schema"}

ODE_PIPELINE = "fastvideo.pipelines.basic.wan.wan_pipeline.WanPipeline"
SDE_PIPELINE = "fastvideo.pipelines.basic.wan.wan_dmd_pipeline.WanDMDPipeline"
assert PIPELINES[ODE_PIPELINE] == "ode" and PIPELINES[SDE_PIPELINE] == "sde"

# The current schema's defaults of the callbacks (spec §3.2-3.4).
EMA_DECAY, EMA_START, EVERY_STEPS, ODE_SAMPLING_STEPS = 0.9999, 0, 100, (40,)
# DMD2's current-schema defaults (fvjax/methods/dmd2/fastvideo_train.py).
DMD2_DEFAULTS = {"generator_update_interval": 1, "real_score_guidance_scale": 1.0, "warp_denoising_step": False,
                 "min_timestep_ratio": 0.0, "max_timestep_ratio": 1.0, "real_score_guidance_form": "standard",
                 "negative_prompt_embedding": "", "negative_prompt": None}
# Keys the written file holds that FastVideo's current schema does not have (fvjax additions).
FVJAX_KEYS = {"training.model.mixed_precision", "training.loop.log_steps", "training.optimizer.lr_step_rules",
              "method.real_score_guidance_form", "method.negative_prompt_embedding", "method.negative_prompt",
              "method.student_flow_shift", "pipeline.sampler_kind", "pipeline.vae_precision", "callbacks.ema.validate"}


@dataclasses.dataclass(frozen=True)
class Upgraded:
    text: str            # the current-schema YAML, with its header
    recipe: Recipe       # the original, as loaded
    upgraded: Recipe     # the written text, loaded back
    left_out: tuple[str, ...]   # keys (in the original's spelling) of values fvjax never reads, left out
    notes: tuple[str, ...]      # other changes of spelling worth a line in the header


# ----------------------------------------------------------------------------------------------- entry point

def is_script(path: Path) -> bool:
    if path.suffix.lower() in SCRIPT_SUFFIXES:
        return True
    if path.suffix.lower() in YAML_SUFFIXES or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def upgrade_path(path: str | Path) -> Upgraded:
    """Load `path` (a recipe or a legacy launch script) and write it in the current schema."""
    path = Path(path)
    if is_script(path):
        from fvjax.recipe.legacy_script import read_launch_script

        launch = read_launch_script(path)
        return upgrade_recipe(launch.recipe, source=str(path), described=launch.described,
                              spell=launch.spell, extra_notes=launch.notes, extra_left_out=launch.left_out)
    if path.suffix.lower() not in YAML_SUFFIXES:
        fail(path, None, "expected a recipe (.yaml or .yml) or a FastVideo legacy launch script (.sh or .slurm)")
    from fvjax.recipe.loader import load_recipe

    recipe = load_recipe(path)
    form = "design" if recipe.form == "phase3" and recipe.roles_key == "roles" else recipe.form
    return upgrade_recipe(recipe, source=str(path), described=FORMS.get(form, form))


def upgrade_recipe(recipe: Recipe, *, source: str, described: str, spell: Callable[[str], str] | None = None,
                   extra_notes: tuple[str, ...] = (), extra_left_out: tuple[str, ...] = ()) -> Upgraded:
    """`spell` maps a canonical key (training.seed) to the original's own spelling (for the header); by default
    the recipe's provenance does. `extra_left_out`: what the original said that never reached the recipe."""
    from fvjax.recipe.loader import parse_recipe

    spell = spell or recipe.provenance.shown
    doc, notes = current_schema(recipe, spell)
    notes = list(extra_notes) + notes
    body = dump_yaml(doc)
    where = f"{source} (upgraded)"
    try:
        loaded = parse_recipe(body, where)
    except UserError as err:   # a bug here, but say what the written text was refused for
        fail(source, err.key, f"the upgraded recipe does not load ({err.message}); please report this")
    left_out = list(extra_left_out) + _check_same(recipe, loaded, source, spell)
    header = _header(source, described, doc, left_out, notes)
    text = header + body
    return Upgraded(text, recipe, parse_recipe(text, where), tuple(left_out), tuple(notes))


# ------------------------------------------------------------------------------------ Recipe -> current schema

def _current_default(field: str) -> Any:
    if field in CURRENT_TRAINING_DEFAULTS:
        return CURRENT_TRAINING_DEFAULTS[field]
    if field == "trackers":
        return ("wandb",)
    return TRAINING_FIELDS[field].default


def _plain(value: Any) -> Any:
    """YAML-ready: tuples as lists, a multi-dataset data_path in one of its written forms."""
    if isinstance(value, DataPaths):
        paths = [path for path, _ in value]
        if all(repeat == 1 for _, repeat in value):
            return paths
        if len(set(paths)) == len(paths):
            return {path: repeat for path, repeat in value}
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _put(doc: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = _plain(value)


def _live_falsy(field: str, recipe: Recipe) -> bool:
    """Whether a training value the current schema cannot write as 0 (FALSY_MEANS) is read by this recipe."""
    t = recipe.training
    if field in ("mode_scale", "logit_std"):
        scheme = {"mode_scale": "mode", "logit_std": "logit_normal"}[field]
        return recipe.method == "finetune" and t.weighting_scheme == scheme
    if field == "min_lr_ratio":
        schedulers = {t.lr_scheduler, getattr(recipe.method_config, "fake_score_lr_scheduler", t.lr_scheduler)}
        return "cosine_with_min_lr" in schedulers
    return True


def current_schema(recipe: Recipe, spell: Callable[[str], str] | None = None) -> tuple[dict, list[str]]:
    """The current-schema mapping of `recipe` and notes on values written in another spelling; `spell` names
    a canonical key as the original wrote it (for errors)."""
    spell = spell or recipe.provenance.shown
    method = get_method(recipe.method)
    if recipe.method not in ("dmd2", "finetune") and method.to_fastvideo is None:
        fail(recipe.source, "recipe.method", f"the upgrade writes dmd2 and finetune recipes; {recipe.method!r} has no "
             "current-schema form in fvjax yet")
    t, c, where = recipe.training, recipe.method_config, recipe.source
    family = get_family(recipe.family)
    if not family.fastvideo_targets or not method.fastvideo_targets:
        fail(where, "recipe.family", f"{recipe.family!r} has no FastVideo model class to name in models.<role>._target_")
    notes: list[str] = []
    doc: dict = {"models": {}, "method": {"_target_": method.fastvideo_targets[0]}, "training": {}}

    # models
    sampled = method.sampled_role
    order = [r for r in method.role_names if r in recipe.roles] + [r for r in recipe.roles if r not in method.role_names]
    windows: dict[str, dict] = {}
    for name in order:
        role = recipe.roles[name]
        targets = get_family(role.family).fastvideo_targets or family.fastvideo_targets
        entry: dict = {"_target_": targets[0], "init_from": role.path}
        arch = dict(role.arch)
        if "num_frames_per_block" in arch:
            entry["num_frames_per_block"] = arch.pop("num_frames_per_block")
        windows[name] = arch   # the causal Wan's local_attn_size / sink_size: pipeline.dit_config
        if not role.trainable:
            entry["trainable"] = False
        if role.disable_custom_init_weights:
            entry["disable_custom_init_weights"] = True
        override = recipe.init_weights_override(name)
        if override:
            entry["transformer_override_safetensor"] = override
        if role.lora is not None:
            entry["lora"] = lora_mapping(role.lora)
        doc["models"][name] = entry
    # finetune, dfsft and tfsft train on the student's own shift (flow_shift); DMD2 / Self-Forcing name it apart;
    # KD has none
    own_shift = recipe.method in ("finetune", "dfsft", "tfsft")
    student_shift = c.flow_shift if own_shift else getattr(c, "student_flow_shift", None)
    if student_shift is not None and student_shift != DEFAULT_FLOW_SHIFT:
        doc["models"][sampled]["flow_shift"] = student_shift
    if recipe.method == "dmd2" and c.student_flow_shift is None:
        doc["method"]["student_flow_shift"] = None   # one shift, pipeline.flow_shift, as the older schemas had it

    # method
    if recipe.method == "dmd2":
        m = doc["method"]
        m["rollout_mode"] = c.rollout_mode
        m["dmd_denoising_steps"] = list(c.dmd_denoising_steps)
        for key in ("generator_update_interval", "real_score_guidance_scale", "warp_denoising_step",
                    "min_timestep_ratio", "max_timestep_ratio"):
            if getattr(c, key) != DMD2_DEFAULTS[key]:
                m[key] = getattr(c, key)
        if c.fake_score_learning_rate == 0:   # (the loader resolved "0: the student's"; so both are 0)
            fail(where, spell("method_config.fake_score_learning_rate"), "is 0 and so is the student's "
                 "learning_rate; FastVideo's current schema requires a non-zero critic learning rate")
        m["fake_score_learning_rate"] = c.fake_score_learning_rate
        m["fake_score_betas"] = list(c.fake_score_betas)
        m["fake_score_lr_scheduler"] = c.fake_score_lr_scheduler
        for key in ("real_score_guidance_form", "negative_prompt_embedding", "negative_prompt"):
            if getattr(c, key) != DMD2_DEFAULTS[key]:
                m[key] = getattr(c, key)
        if "student_flow_shift" in m:   # after the others, as a last word on the schedule
            m["student_flow_shift"] = m.pop("student_flow_shift")
    elif method.to_fastvideo is not None:   # the method writes its own block (Self-Forcing, ...)
        doc["method"].update(method.to_fastvideo(c, where, spell))

    # training: every field with a place in the current schema that differs from that schema's default
    tr = doc["training"]
    dist = fill_distributed(t.num_gpus, AUTO, AUTO, 1, AUTO)
    for field, place in PLACES.items():
        if not place.startswith("training.") or field in ("model_path", "enable_gradient_checkpointing_type"):
            continue
        value = getattr(t, field)
        if field == "num_gpus":
            if value != 1 or "num_gpus" in recipe.training_given:
                _put(doc, place, value)
            continue
        if field in ("sp_size", "tp_size", "hsdp_replicate_dim", "hsdp_shard_dim"):
            if value != getattr(dist, field):
                _put(doc, place, value)
            continue
        if field == "trackers" and not value:
            value = ("tensorboard",)   # fvjax's default (JSONL + TensorBoard); the current schema's is W&B
        if field == "tracker_project_name" and not value:
            _put(doc, place, "")   # (the loader gives W&B "fvjax" for an empty name, so here W&B is off)
            continue
        if field in FALSY_MEANS and not value:
            if _live_falsy(field, recipe):
                fail(where, spell(f"training.{field}"), f"is {value}, which FastVideo's current "
                     f"schema reads as {FALSY_MEANS[field]}; the upgrade cannot write it")
            _put(doc, place, value)   # accepted as written where nothing reads it
            continue
        if field == "dit_precision":
            if value != "fp32":
                _put(doc, place, value)
            continue
        if value != _current_default(field) and not (value is None and TRAINING_FIELDS[field].default is None):
            _put(doc, place, value)
    if t.model_path != recipe.roles[sampled].path:
        tr["model_path"] = t.model_path
    if t.enable_gradient_checkpointing_type is not None and recipe.trainable_roles:
        _put(doc, "training.model.enable_gradient_checkpointing_type", t.enable_gradient_checkpointing_type)
    doc["training"] = _ordered(tr, ("distributed", "data", "optimizer", "loop", "checkpoint", "tracker", "vsa",
                                    "model", "dit_precision", "model_path"))

    # callbacks
    callbacks: dict = {}
    if t.max_grad_norm is not None and t.max_grad_norm > 0:
        callbacks["grad_clip"] = {"max_grad_norm": t.max_grad_norm}
    if t.ema_decay > 0:
        ema: dict = {}
        if t.ema_decay != EMA_DECAY:
            ema["decay"] = t.ema_decay
        if t.ema_start_step != EMA_START:
            ema["start_iter"] = t.ema_start_step
        if not t.use_ema:
            ema["validate"] = False   # fvjax key: the older schemas validate with the raw weights unless use_ema
        callbacks["ema"] = ema
    if t.log_validation:
        callbacks["validation"] = _validation(recipe, spell)
    if callbacks:
        doc["callbacks"] = callbacks

    # pipeline (FastVideo needs the block for Wan, `{}` meaning the registry's defaults)
    pipeline: dict = {}
    if recipe.pipeline.flow_shift is not None:
        pipeline["flow_shift"] = recipe.pipeline.flow_shift
    for name in ("sampler_kind", "vae_precision"):
        if getattr(recipe.pipeline, name) != PIPELINE_FIELDS[name].default:
            pipeline[name] = getattr(recipe.pipeline, name)
    window = _dit_window(windows, where, spell)
    if window:
        pipeline["dit_config"] = window
    doc["pipeline"] = pipeline
    return doc, notes


def _dit_window(windows: dict[str, dict], where: object, spell: Callable[[str], str]) -> dict:
    """FastVideo sets local_attn_size / sink_size once (pipeline.dit_config) for every causal role: the roles'
    arch options must agree."""
    given = {name: arch for name, arch in windows.items() if arch}
    for name, arch in given.items():
        for key in arch:
            if key not in ("local_attn_size", "sink_size"):
                fail(where, spell(f"models.{name}.arch.{key}"), "has no place in FastVideo's current schema")
    values = {tuple(sorted(arch.items())) for arch in given.values()}
    if len(values) > 1:
        fail(where, spell(f"models.{next(iter(given))}.arch"), "differs between roles; FastVideo's current schema "
             "sets local_attn_size / sink_size once (pipeline.dit_config) for all causal roles")
    return dict(next(iter(values))) if values else {}


def _validation(recipe: Recipe, spell: Callable[[str], str]) -> dict:
    t, where = recipe.training, recipe.source
    ode = recipe.method != "dmd2" and recipe.pipeline.sampler_kind == "ode"
    block: dict = {"pipeline_target": ODE_PIPELINE if ode else SDE_PIPELINE,
                   "dataset_file": t.validation_dataset_file}
    every = t.validation_steps
    if every <= 0:
        fail(where, spell("training.validation_steps"), "is 0 while validation is on (fvjax "
             "refuses to train this recipe; the current schema reads 0 as validation off); set it first")
    if every != EVERY_STEPS:
        block["every_steps"] = int(every)
    if not t.validation_at_start:
        block["run_at_start"] = False
    if recipe.method != "dmd2":   # DMD2 samples its own few-step schedule (the method fills the count)
        steps = t.validation_sampling_steps
        if not steps:
            fail(where, spell("training.validation_sampling_steps"), "is empty while validation "
                 f"is on; the current schema's default is {list(ODE_SAMPLING_STEPS)}: set it first")
        if not ode or steps != ODE_SAMPLING_STEPS:
            block["sampling_steps"] = list(steps)
    scales = t.validation_guidance_scale
    if len(scales) > 1:
        fail(where, spell("training.validation_guidance_scale"), f"has {len(scales)} values; "
             "FastVideo's current schema takes one guidance_scale")
    if scales:
        block["guidance_scale"] = scales[0]
    return block


def _ordered(mapping: dict, order: tuple[str, ...]) -> dict:
    return {k: mapping[k] for k in order if k in mapping} | {k: v for k, v in mapping.items() if k not in order}


# ------------------------------------------------------------------------------------ comparing the two recipes

def _check_same(old: Recipe, new: Recipe, source: str, spell: Callable[[str], str]) -> list[str]:
    """The upgraded recipe must be the same experiment object as the original; returns the original's
    keys that fvjax accepts and ignores (left out: the current schema has no place for them)."""
    if new != old:
        key, (was, now) = next(iter(differences(old, new).items()))
        fail(source, spell(key), f"is {_plain(was)!r}, which the upgrade could not write in FastVideo's current "
             f"schema (it would load as {_plain(now)!r})")
    return [spell(key) for key, _ in old.provenance.ignored]


# ------------------------------------------------------------------------------------------------- the text

def _header(source: str, described: str, doc: dict, left_out: list[str], notes: list[str]) -> str:
    lines = [f"# Upgraded from {source} ({described}) by `python -m fvjax.recipe upgrade`:",
             "# FastVideo's current recipe schema; fvjax trains it as it trained the original."]
    extras = sorted(k for k in FVJAX_KEYS if _has(doc, k))
    if extras:
        lines.append(f"# fvjax keys (FastVideo has none): {', '.join(extras)}.")
    if left_out:
        lines.append(f"# Left out (fvjax never reads them): {', '.join(left_out)}.")
    lines += [f"# {note}." for note in notes]
    return "\n".join(lines) + "\n"


def _has(doc: dict, key: str) -> bool:
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class _Dumper(yaml.SafeDumper):
    pass


def _represent_list(dumper: yaml.SafeDumper, value: list):
    flow = all(not isinstance(v, (list, dict)) for v in value) and len(value) <= 16
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, value: dict):
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=False)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def dump_yaml(doc: dict) -> str:
    """Block mappings, flow lists of scalars, a blank line between top-level sections; deterministic."""
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100000,
                     default_flow_style=False)
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if i and line and not line[0].isspace() and not line.startswith("-"):
            out.append("")
        out.append(line)
    return "\n".join(out) + "\n"

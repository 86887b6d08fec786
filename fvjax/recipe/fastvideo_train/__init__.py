"""FastVideo's current recipe schema (`fastvideo/train`, spec fastvideo_v3_recipes.md), translated into
fvjax's canonical (Phase 3) form, which the loader then checks like any other recipe:

    models:   {<role>: {_target_, init_from, trainable, flow_shift, ...}}   -> models.<role>.{family, path, ...}
    method:   {_target_, <method keys>}                                    -> recipe.method + method_config
    training: {distributed, data, optimizer, loop, checkpoint, tracker, vsa, model, dit_precision, model_path}
                                                                           -> the flat TrainingArgs fields
    callbacks: {grad_clip, ema, validation}                                -> clipping, EMA, validation fields
    pipeline: {...} or "file.json"                                         -> pipeline_config(_path)

The translation keeps the key each value was written under (so every error names the key the user
wrote) and which values are this schema's defaults (written out, since they differ from the older
schemas': the dry run shows them).
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.families.registry import get_family
from fvjax.methods.api import FastVideoMethodContext
from fvjax.recipe.fastvideo_train.callbacks import read_callbacks
from fvjax.recipe.fastvideo_train.roles import DEFAULT_FLOW_SHIFT, read_role
from fvjax.recipe.fastvideo_train.targets import method_for_target
from fvjax.recipe.fastvideo_train.training import PLACES, check_trackers, read_training
from fvjax.schema import fields as F
from fvjax.schema.recipe import renamed_key

TOP_LEVEL = ("models", "method", "training", "callbacks", "pipeline")
OLDER_KEYS = ("recipe", "distill", "roles", "method_config", "pipeline_config", "pipeline_config_path")


def is_current_schema(raw: dict) -> bool:
    if any(k in raw for k in ("method", "callbacks", "pipeline")):
        return True
    models = raw.get("models")
    return isinstance(models, dict) and any(isinstance(v, dict) and ("_target_" in v or "init_from" in v)
                                            for v in models.values())


@dataclasses.dataclass
class Translation:
    raw: dict                                  # the canonical (Phase 3) mapping
    written: dict[str, str]                    # canonical dotted key -> the key as written in the recipe
    defaults: dict[str, str]                   # canonical dotted key -> why it holds this schema's default
    ignored: list[tuple[str, str]]             # (key as written, why it means nothing in fvjax)

    def written_key(self, key: str | None) -> str | None:
        """The recipe's own name for a canonical key (the longest mapped prefix is replaced)."""
        return renamed_key(key, self.written) if key else key


def _method_block(raw, where: object) -> dict:
    if "method" not in raw:
        fail(where, "method", "missing; give method: {_target_: fastvideo.train.methods.distribution_matching."
             "dmd2.DMD2Method, ...} (or ...fine_tuning.finetune.FineTuneMethod)")
    block = F.mapping(raw["method"], where, "method")
    if "_target_" not in block:
        fail(where, "method._target_", "missing; name the method class, e.g. fastvideo.train.methods."
             "distribution_matching.dmd2.DMD2Method")
    return block


def _causal_window(pipeline: dict, roles: dict, models: dict, written: dict, ignored: list, where: object) -> None:
    """pipeline.dit_config.local_attn_size / sink_size configure FastVideo's causal Wan (WanCausalModel):
    moved onto the causal roles' `arch`; pipeline.is_causal says what their class does (without a causal
    role, pipeline_config refuses all three)."""
    dit = pipeline.get("dit_config")
    causal = [name for name, role in roles.items() if role.family == "wan_causal"]
    if not causal:
        return
    if "is_causal" in pipeline and F.read_bool(pipeline["is_causal"], where, "pipeline.is_causal"):
        del pipeline["is_causal"]
        ignored.append(("pipeline.is_causal", f"models.{causal[0]} is the causal Wan (WanCausalModel) already"))
    if not isinstance(dit, dict):
        return
    dit = dict(dit)
    for field in ("local_attn_size", "sink_size"):
        if field in dit:
            value = F.read_int(dit.pop(field), where, f"pipeline.dit_config.{field}")
            for name in causal:
                models[name] = {**models[name], "arch": {**models[name].get("arch", {}), field: value}}
                written[f"models.{name}.arch.{field}"] = f"pipeline.dit_config.{field}"
    if dit:
        pipeline["dit_config"] = dit
    else:   # nothing else in it: not an ignored block
        del pipeline["dit_config"]


def translate(raw: dict, where: object) -> Translation:
    for name in raw:
        if name in OLDER_KEYS:
            fail(where, name, "belongs to the older schema (recipe:/models.<role>.path/method_config:), but this "
                 "recipe is in FastVideo's current schema (method: with _target_); write one schema "
                 "(`python -m fvjax.recipe upgrade` converts an older recipe)")
        if name not in TOP_LEVEL:
            F.unknown_key(where, name, name, TOP_LEVEL)
    block = _method_block(raw, where)
    method = method_for_target(block["_target_"], where, "method._target_")
    if "models" not in raw:
        fail(where, "models", f"missing; method {method.name!r} needs roles {', '.join(method.role_names)}, each "
             "{_target_, init_from}")
    models = F.mapping(raw["models"], where, "models")
    roles = {str(name): read_role(str(name), spec, where) for name, spec in models.items()}
    if "training" not in raw:
        fail(where, "training", "missing; it holds distributed, data, optimizer, loop, checkpoint, ... blocks")

    written: dict[str, str] = {"method_config": "method", "pipeline_config": "pipeline",
                               "pipeline_config_path": "pipeline", "recipe.method": "method._target_"}
    written.update({f"training.{field}": key for field, key in PLACES.items()})
    defaults: dict[str, str] = {}
    ignored: list[tuple[str, str]] = []
    sampled = method.sampled_role
    family = roles[sampled].family if sampled in roles else next((r.family for r in roles.values()), "")
    for name, role in roles.items():
        written[f"models.{name}.path"] = f"models.{name}.init_from"
        written[f"models.{name}.family"] = f"models.{name}._target_"
        ignored += role.ignored
        if get_family(role.family).kin != get_family(family).kin:
            fail(where, f"models.{name}._target_", f"is a {role.family} model but models.{sampled} is {family}; "
                 "all roles must be of one family (or its variants: the causal Wan next to the Wan)")
    written["recipe.family"] = f"models.{sampled}._target_" if sampled in roles else "models"

    # method: the method's own translation makes its current-schema defaults explicit.
    method_raw = {k: v for k, v in block.items() if k != "_target_"}
    if "attn_kind" in method_raw:   # gone from FastVideo's current schema (ignored there)
        kind = method_raw.pop("attn_kind")
        if kind == "vsa":
            fail(where, "method.attn_kind", "video sparse attention (vsa) is not implemented in fvjax; remove it")
        ignored.append(("method.attn_kind", "not read by FastVideo's current methods (attention is dense)"))
    student_shift = roles[sampled].flow_shift if sampled in roles else DEFAULT_FLOW_SHIFT
    if sampled in roles:
        written["method_config.student_flow_shift"] = f"models.{sampled}.flow_shift"
    for name, role in roles.items():
        if name != sampled and role.flow_shift != DEFAULT_FLOW_SHIFT:
            ignored.append((f"models.{name}.flow_shift", f"only models.{sampled}'s scheduler is used for noising"))
    if method.from_fastvideo is not None:
        method_config = method.from_fastvideo(method_raw, FastVideoMethodContext(where, student_shift,
                                                                                 str(block["_target_"]).strip()))
    else:
        method_config = method_raw
    for key in method_config:
        if key not in method_raw:
            defaults[f"method_config.{key}"] = "FastVideo's current-schema default"

    training, t_written, t_defaults, extra = read_training(raw["training"], where)
    check_trackers(training, where, t_written.get("trackers", "training.tracker.trackers"))
    written.update({f"training.{field}": key for field, key in t_written.items()})
    defaults.update({f"training.{field}": why for field, why in t_defaults.items()})
    fam = get_family(family) if family else None
    callbacks = read_callbacks(raw.get("callbacks"), where, training.get("num_latent_t"),
                               fam.defaults.temporal_compression if fam else 4)
    training.update(callbacks.values)
    written.update({f"training.{field}": key for field, key in callbacks.written.items()})
    defaults.update({f"training.{field}": why for field, why in callbacks.defaults.items()})
    ignored += callbacks.ignored
    if callbacks.validation_output_dir is not None:
        value, key = callbacks.validation_output_dir
        if value != training.get("output_dir"):
            fail(where, key, f"is {value!r}; fvjax writes validation videos under training.checkpoint.output_dir "
                 "(validation/); remove it")
    if callbacks.sampling_timesteps is not None:
        value, key = callbacks.sampling_timesteps
        if value != method_config.get("dmd_denoising_steps"):
            fail(where, key, "fvjax's few-step validation samples method.dmd_denoising_steps; make them equal or "
                 "remove it")

    # The rematerialisation policy: per trainable role, falling back to training.model's.
    policies = {}
    for name, role in roles.items():
        if F.read_bool(role.raw.get("trainable", True), where, f"models.{name}.trainable"):
            policies[name] = role.remat if role.remat is not None else extra["enable_gradient_checkpointing_type"]
    if len(set(policies.values())) > 1:
        fail(where, "models", f"trainable roles ask for different enable_gradient_checkpointing_type "
             f"({', '.join(f'{n}: {p}' for n, p in policies.items())}); fvjax applies one policy to all trainable "
             "roles: give them the same")
    policy = next(iter(policies.values()), None)
    if policy is not None:
        training["enable_gradient_checkpointing_type"] = policy
        written["training.enable_gradient_checkpointing_type"] = next(
            f"models.{n}.enable_gradient_checkpointing_type" if roles[n].remat is not None
            else "training.model.enable_gradient_checkpointing_type" for n in policies)

    canonical = {"recipe": {"family": family, "method": method.name},
                 "models": {name: role.raw for name, role in roles.items()},
                 "training": training, "method_config": method_config}
    pipeline = raw.get("pipeline")
    if isinstance(pipeline, str):
        canonical["pipeline_config_path"] = pipeline
        if callbacks.sampler_kind == "sde" and method.validation_samplers is None:
            fail(where, "pipeline", "is a file, so fvjax cannot set sampler_kind: sde for the WanDMDPipeline "
                 "validation; give pipeline as a mapping (with the file's fields) or use WanPipeline")
    else:
        section = dict(F.mapping(pipeline if pipeline is not None else {}, where, "pipeline"))
        if "dit_precision" in section:   # FastVideo: training.dit_precision overrides it
            ignored.append(("pipeline.dit_precision", "training.dit_precision decides the master weights"))
            section.pop("dit_precision")
        if callbacks.sampler_kind == "sde" and method.validation_samplers is None:
            section.setdefault("sampler_kind", "sde")
        _causal_window(section, roles, canonical["models"], written, ignored, where)
        canonical["pipeline_config"] = section
    return Translation(canonical, written, defaults, ignored)

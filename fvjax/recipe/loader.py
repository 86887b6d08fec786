"""Load a recipe YAML into a `Recipe`, checking everything once.

Accepted forms (both normalise to the same object):
- Phase 3 (canonical): `recipe: {family, method}`, `models:` (or FastVideo's later name `roles:`),
  `training:`, `pipeline_config:` or `pipeline_config_path:`, optional `method_config:`;
- Phase 2 (the seed): `distill: {model, method}` instead of `recipe:`, method knobs in `training:` and
  `pipeline_config:`.
Giving both members of a pair (recipe/distill, models/roles, pipeline_config/pipeline_config_path) is an
error. Every error is a `UserError` naming the file and the dotted key.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

from fvjax.errors import UserError, fail
from fvjax.families.registry import get_family
from fvjax.lora.spec import read_lora
from fvjax.methods.api import TEXT_ONLY, CheckContext, MethodSpec
from fvjax.methods.registry import get_method
from fvjax.schema import fields as F
from fvjax.schema.params import METHOD, PIPELINE, TRAINING, Given, read_method_config, resolve_params
from fvjax.schema.pipeline_config import PIPELINE_FIELDS, PipelineConfig, read_pipeline_values
from fvjax.schema.recipe import Provenance, Recipe, RoleSpec
from fvjax.schema.training_args import (IGNORED, TRAINING_FIELDS, ExecutionMode, TrainingArgs,
                                        read_training_values)
from fvjax.recipe.fastvideo_train import Translation, is_current_schema, translate
from fvjax.recipe.overrides import WHERE as CLI, Override, apply_overrides, overridden
from fvjax.recipe.yamlio import YAML_SUFFIXES, load_config_file, parse_yaml, read_text
from fvjax.sharding.mesh import AUTO, fill_distributed, plan_mesh

TOP_LEVEL = ("recipe", "distill", "models", "roles", "training", "pipeline_config", "pipeline_config_path",
             "method_config")
ROLE_KEYS = ("family", "path", "trainable", "disable_custom_init_weights", "transformer_override_safetensor", "lora",
             "arch")
DISTRIBUTED = ("num_gpus", "sp_size", "tp_size", "hsdp_replicate_dim", "hsdp_shard_dim")

# Value ranges beyond types (FastVideo leaves these unchecked and fails later, or silently misbehaves).
_NON_NEGATIVE = ("dataloader_num_workers", "train_batch_size", "num_latent_t", "num_height", "num_width",
                 "num_frames", "checkpoints_total_limit", "training_state_checkpointing_steps",
                 "weight_only_checkpointing_steps", "learning_rate", "weight_decay", "lr_warmup_steps",
                 "lr_num_cycles", "max_train_steps", "gradient_accumulation_steps", "fake_score_learning_rate",
                 "ema_start_step", "validation_steps", "logit_std")
_UNIT_INTERVAL = ("training_cfg_rate", "min_lr_ratio")


def _exclusive(raw: dict, a: str, b: str, where: object, what: str) -> str | None:
    if a in raw and b in raw:
        fail(where, b, f"both {a}: and {b}: are given; {what}, keep one")
    return a if a in raw else b if b in raw else None


def _read_selector(raw: dict, where: object) -> tuple[str, str, str]:
    key = _exclusive(raw, "recipe", "distill", where, "recipe: (Phase 3) and distill: (Phase 2) are the same "
                     "selection")
    if key is None:
        fail(where, "recipe", "missing; add recipe: {family: wan, method: dmd2} (or Phase 2 distill: {model: "
             "wan, method: dmd2})")
    section = F.mapping(raw[key], where, key)
    family_key = "family" if key == "recipe" else "model"
    for name in section:
        if name not in (family_key, "method"):
            F.unknown_key(where, f"{key}.{name}", name, (family_key, "method"))
    for name in (family_key, "method"):
        if name not in section:
            fail(where, f"{key}.{name}", "missing")
    family = F.read_nonempty_str(section[family_key], where, f"{key}.{family_key}")
    method = F.read_nonempty_str(section["method"], where, f"{key}.method")
    get_family(family, where, f"{key}.{family_key}")
    get_method(method, where, f"{key}.method")
    return key, family, method


def _read_roles(raw: dict, roles_key: str, family: str, method: MethodSpec, where: object) -> dict[str, RoleSpec]:
    section = F.mapping(raw[roles_key], where, roles_key)
    roles: dict[str, RoleSpec] = {}
    for name, spec in section.items():
        key = f"{roles_key}.{name}"
        if name not in method.role_names:
            hint = F.did_you_mean(name, method.role_names)
            fail(where, key, f"method {method.name!r} does not use a role named {name!r} (its roles: "
                 f"{', '.join(method.role_names)})" + (f"; {hint}" if hint.startswith("did") else ""))
        spec = F.mapping(spec, where, key)
        for field in spec:
            if field not in ROLE_KEYS:
                F.unknown_key(where, f"{key}.{field}", field, ROLE_KEYS)
        if "path" not in spec:
            fail(where, f"{key}.path", "missing; give a Hugging Face hub id, a Diffusers directory or an "
                 "fvjax weights directory")
        role_family = F.read_nonempty_str(spec.get("family", family), where, f"{key}.family")
        if get_family(role_family, where, f"{key}.family").kin != get_family(family).kin:
            fail(where, f"{key}.family", f"is {role_family!r} but the recipe's family is {family!r}; the "
                 f"{family} family builds only {family} roles (and its variants')")
        arch = F.mapping(spec.get("arch") or {}, where, f"{key}.arch")
        roles[name] = RoleSpec(
            name=name, family=role_family,
            path=F.read_nonempty_str(spec["path"], where, f"{key}.path"),
            trainable=F.read_bool(spec.get("trainable", True), where, f"{key}.trainable"),
            disable_custom_init_weights=F.read_bool(spec.get("disable_custom_init_weights", False), where,
                                                    f"{key}.disable_custom_init_weights"),
            transformer_override_safetensor=F.optional(F.read_str)(
                spec.get("transformer_override_safetensor"), where, f"{key}.transformer_override_safetensor") or "",
            lora=read_lora(spec.get("lora"), where, f"{key}.lora"),
            arch=tuple(sorted((str(k), v) for k, v in arch.items())))
        if roles[name].lora is not None and not roles[name].trainable:
            fail(where, f"{key}.lora", "LoRA is enabled on a frozen role (trainable: false); only a trainable role's "
                 "factors are trained: remove the lora block or set enable: false")
        if roles[name].transformer_override_safetensor and roles[name].disable_custom_init_weights:
            fail(where, f"{key}.transformer_override_safetensor", "is set but disable_custom_init_weights is true, "
                 "which skips it (FastVideo ignores it silently); remove one of them")
    for need in method.roles:
        key = f"{roles_key}.{need.name}"
        if need.name not in roles:
            if need.optional:
                continue
            fail(where, key, f"missing; method {method.name!r} needs roles {', '.join(method.role_names)}")
        if roles[need.name].trainable != need.trainable:
            state = "trainable: true" if need.trainable else "trainable: false"
            fail(where, f"{key}.trainable", f"must be {state.split(': ')[1]} for method {method.name!r} "
                 f"({need.why}); set {state}")
        if need.families and roles[need.name].family not in need.families:
            fail(where, f"{key}.family", f"is {roles[need.name].family!r} but method {method.name!r} needs a "
                 f"{' or '.join(need.families)} model here ({need.why})")
    return roles


def _read_pipeline(raw: dict, where: object) -> tuple[Given, str | None]:
    key = _exclusive(raw, "pipeline_config", "pipeline_config_path", where,
                     "they are two ways of giving one pipeline config")
    if key is None:
        return Given({}, where, "pipeline_config"), None
    value = raw[key]
    if isinstance(value, str) or key == "pipeline_config_path":
        path_text = F.read_nonempty_str(value, where, key)
        path = Path(path_text).expanduser()
        if not os.path.exists(path):
            fail(where, key, f"file {path_text!r} not found")
        if not path.is_file():
            fail(where, key, f"{path_text!r} is not a file")
        content = load_config_file(path, "pipeline config")
        content = F.mapping(content if content is not None else {}, path, "")
        return Given(read_pipeline_values(content, path, ""), path, ""), path_text
    section = F.mapping(value if value is not None else {}, where, key)
    return Given(read_pipeline_values(section, where, key), where, key), None


def _normalise(values: dict, roles: dict[str, RoleSpec]) -> None:
    """One spelling per meaning, so that every form of a recipe (and its upgrade) is the same object:
    ignored fields at their defaults (the dry run still lists them), no clipping as 0, no EMA without its
    start step, switched-off validation without its settings, no trackers as fvjax's default,
    W&B's empty project as the one fvjax gives it, the training-wide initial-weights file on each role
    it applies to."""
    for name in list(values):
        if TRAINING_FIELDS[name].metadata["status"] == IGNORED:
            values[name] = TRAINING_FIELDS[name].default
    if values.get("max_grad_norm") is None or values["max_grad_norm"] < 0:   # no clipping
        values["max_grad_norm"] = 0.0
    if not values.get("ema_decay"):   # no EMA: when it would start means nothing
        values.pop("ema_start_step", None)
    if not values.get("log_validation"):   # validation off: its settings are never read
        for name in ("validation_dataset_file", "validation_steps", "validation_guidance_scale", "validation_at_start"):
            values.pop(name, None)
    if not values.get("trackers"):   # metrics.jsonl and TensorBoard
        values["trackers"] = ("tensorboard",)
    if "wandb" in values["trackers"] and not values.get("tracker_project_name"):
        values["tracker_project_name"] = "fvjax"
    override = values.pop("init_weights_from_safetensors", "")
    for name, role in roles.items():
        if override and not role.disable_custom_init_weights and not role.transformer_override_safetensor:
            roles[name] = dataclasses.replace(role, transformer_override_safetensor=override)


def _legacy_lora(values: dict, roles: dict[str, RoleSpec], method: MethodSpec, where: object) -> None:
    """FastVideo's flat LoRA fields (lora_training, lora_rank, lora_alpha, lora_target_modules) become the
    student's `lora` block, where its current schema puts them; fvjax applies them to a finetune only (the
    legacy distillation pipelines' choice of transformers is theirs; name the roles there)."""
    fields = {k: values.pop(f"lora_{k}") for k in ("training", "rank", "alpha", "target_modules")
              if f"lora_{k}" in values}
    if not fields.pop("training", False):
        return
    if method.name != "finetune":
        fail(where, "training.lora_training", f"fvjax maps it for finetune recipes only; for {method.name!r} put a "
             "lora block on the roles that train it (models.<role>.lora: {enable: true, rank: ...})")
    if fields.get("rank") is None:
        fail(where, "training.lora_rank", "missing; lora_training needs a rank > 0 (as FastVideo asserts)")
    student = roles[method.sampled_role]
    if student.lora is not None:
        fail(where, "training.lora_training", f"and models.{method.sampled_role}.lora both set LoRA; keep one")
    block = {"enable": True, "rank": fields["rank"], "alpha": fields.get("alpha"),
             "target_modules": list(fields["target_modules"]) if fields.get("target_modules") else None}
    roles[method.sampled_role] = dataclasses.replace(student, lora=read_lora(block, where, "training.lora"))


def _check_int32(value, where: object, key: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > F.INT32_MAX:
        fail(where, key, f"is {value}; must be at most {F.INT32_MAX} (2**31 - 1)")


def _check_ranges(training: TrainingArgs, where: object) -> None:
    for name in _NON_NEGATIVE:
        if getattr(training, name) < 0:
            fail(where, f"training.{name}", f"is {getattr(training, name)}; must be >= 0")
    for name in _UNIT_INTERVAL:
        if not 0.0 <= getattr(training, name) <= 1.0:
            fail(where, f"training.{name}", f"is {getattr(training, name)}; must be in [0, 1]")
    # Seeds key jax.random (32-bit seeds); step counts and intervals enter jitted code as int32.
    if training.seed is not None and not 0 <= training.seed < 2 ** 32:
        fail(where, "training.seed", f"is {training.seed}; must be in [0, 2**32)")
    for field in dataclasses.fields(training):
        _check_int32(getattr(training, field.name), where, f"training.{field.name}")
    if training.validation_steps != int(training.validation_steps):   # 0 with log_validation: a preflight problem
        fail(where, "training.validation_steps", f"is {training.validation_steps:g}; it must be a whole number of "
             "steps")
    if training.log_steps < 1:
        fail(where, "training.log_steps", f"is {training.log_steps}; must be >= 1")
    if not 0.0 <= training.ema_decay < 1.0:
        fail(where, "training.ema_decay", f"is {training.ema_decay}; must be in [0, 1)")
    if training.use_ema and training.ema_decay == 0:
        fail(where, "training.use_ema", "is true but there is no EMA (ema_decay is 0); set ema_decay (e.g. 0.999) "
             "or remove use_ema")
    if training.lr_scheduler == "piecewise_constant" or training.fake_score_lr_scheduler == "piecewise_constant":
        if not training.lr_step_rules:
            key = "lr_scheduler" if training.lr_scheduler == "piecewise_constant" else "fake_score_lr_scheduler"
            fail(where, f"training.{key}", "piecewise_constant needs training.lr_step_rules, e.g. "
                 "\"1:1000,0.1:2000,0.01\"")


def load_recipe(path: str | Path, *, device_count: Callable[[], int] | int | None = None,
                overrides: Sequence[Override] = ()) -> Recipe:
    """Read and check the recipe at `path`, with the command line's dotted `overrides` applied first.
    `device_count` fills `training.num_gpus` when the recipe leaves it out (a callable is only called
    then); without it the default is FastVideo's 1."""
    path = Path(path)
    if path.suffix.lower() not in YAML_SUFFIXES:
        fail(path, None, "a recipe must be a .yaml or .yml file")
    text = read_text(path, "recipe")
    return parse_recipe(text, path, device_count=device_count, overrides=overrides)


def _attribute(err: UserError, where: object, translation: Translation | None,
               overrides: Sequence[Override]) -> UserError:
    """The error with the key as the recipe wrote it, and on the command line when an override set it."""
    if err.where != str(where):
        return err
    key = translation.written_key(err.key) if translation is not None else err.key
    if overridden(key, overrides) is not None:
        return UserError(CLI, f"--{key}", err.message)
    return UserError(err.where, key, err.message)


def parse_recipe(text: str, where: Path | str, *, device_count: Callable[[], int] | int | None = None,
                 overrides: Sequence[Override] = ()) -> Recipe:
    raw = parse_yaml(text, where)
    if raw is None:
        fail(where, None, "the recipe is empty")
    raw = apply_overrides(F.mapping(raw, where, ""), overrides)
    translation = None
    try:
        if is_current_schema(raw):
            translation = translate(raw, where)
        recipe = _build(translation.raw if translation else raw, text, where, device_count, translation)
    except UserError as err:
        raise _attribute(err, where, translation, overrides) from None
    if overrides:
        cli = {o.key: o.text for o in overrides}
        recipe = dataclasses.replace(recipe, provenance=dataclasses.replace(recipe.provenance, cli=cli))
    return recipe


def _build(raw: dict, text: str, where: Path | str, device_count, translation: Translation | None) -> Recipe:
    for name in raw:
        if name not in TOP_LEVEL:
            F.unknown_key(where, name, name, TOP_LEVEL)

    selector_key, family_name, method_name = _read_selector(raw, where)
    family = get_family(family_name)
    method = get_method(method_name)

    roles_key = _exclusive(raw, "models", "roles", where, "roles: is FastVideo's later name for models:")
    if roles_key is None:
        fail(where, "models", f"missing; method {method.name!r} needs roles {', '.join(method.role_names)}")
    roles = _read_roles(raw, roles_key, family_name, method, where)

    if "training" not in raw:
        fail(where, "training", "missing; it holds the TrainingArgs fields (output_dir, max_train_steps, seed, ...)")
    training_raw = F.mapping(raw["training"] if raw["training"] is not None else {}, where, "training")
    values = read_training_values(training_raw, where)
    given_training = set(values)

    mode = method.mode
    if "mode" in values:
        stated = F.choice(tuple(m.value for m in ExecutionMode))(values["mode"], where, "training.mode")
        if stated != mode.value:
            fail(where, "training.mode", f"is {stated!r} but method {method.name!r} runs in {mode.value!r} mode; "
                 "remove it (the mode follows recipe.method)")
    values["mode"] = mode
    if values.get("inference_mode", False):
        fail(where, "training.inference_mode", "must be false in a training recipe (remove it)")
    if values.get("dit_cpu_offload", False):
        fail(where, "training.dit_cpu_offload", "must be false: fvjax never offloads the DiT during "
             "training (parameters are sharded instead); remove it")

    pipeline_given, pipeline_path = _read_pipeline(raw, where)
    pipeline_values = dict(pipeline_given.values)

    # dit_precision may be written on either side (FastVideo merges training kwargs into the pipeline config).
    p_prec, t_prec = pipeline_values.get("dit_precision"), values.get("dit_precision")
    if p_prec is not None and t_prec is not None and p_prec != t_prec:
        fail(pipeline_given.where, pipeline_given.key("dit_precision"),
             f"is {p_prec!r} but training.dit_precision is {t_prec!r}; keep one")
    precision = t_prec or p_prec or TRAINING_FIELDS["dit_precision"].default
    values["dit_precision"] = pipeline_values["dit_precision"] = precision

    # FastVideo: model_path defaults to the student's path (the role the method samples with).
    sampled = roles.get(method.sampled_role)
    if not values.get("model_path"):
        if sampled is None:
            fail(where, "training.model_path", f"is missing and {roles_key}.{method.sampled_role} is not provided")
        values["model_path"] = sampled.path
    if not values.get("pretrained_model_name_or_path"):
        values["pretrained_model_name_or_path"] = values["model_path"]
    for field, role in (("real_score_model_path", "teacher"), ("fake_score_model_path", "critic")):
        if values.get(field) and role in roles and values[field] != roles[role].path:
            fail(where, f"training.{field}", f"is {values[field]!r} but {roles_key}.{role}.path is "
                 f"{roles[role].path!r}; the role's path is the one used, remove this legacy field")

    if "num_gpus" not in values and device_count is not None:
        values["num_gpus"] = device_count() if callable(device_count) else int(device_count)
    dist = fill_distributed(values.get("num_gpus", 1), values.get("sp_size", AUTO), values.get("tp_size", AUTO),
                            values.get("hsdp_replicate_dim", 1), values.get("hsdp_shard_dim", AUTO), where=where)
    mesh = plan_mesh(dist, where=where)
    values.update(dataclasses.asdict(dist))

    method_raw = raw.get("method_config")
    method_raw = F.mapping(method_raw if method_raw is not None else {}, where, "method_config")
    given = {
        METHOD: Given(read_method_config(method.params, method_raw, where, "method_config", method.name),
                      where, "method_config"),
        TRAINING: Given({k: values[k] for k in given_training}, where, "training"),
        PIPELINE: pipeline_given,
    }
    defaults = {name: f.default for name, f in TRAINING_FIELDS.items()}
    context = {"flow_shift": family.default_flow_shift(values["model_path"])}
    resolved = resolve_params(method.params, given, training_defaults=defaults, context=context)
    for (section, name), value in resolved.write_back.items():
        (values if section == TRAINING else pipeline_values)[name] = value
    method_config = method.config_cls(**resolved.values)
    for name, value in resolved.values.items():   # method ints enter jitted code too
        _check_int32(value, *resolved.origins[name])

    _legacy_lora(values, roles, method, where)
    _normalise(values, roles)
    training = TrainingArgs(**values)
    if training.preprocessed_data_type == "text_only" and method.data_needs(method_config) != TEXT_ONLY:
        fail(where, "training.preprocessed_data_type", f"is text_only, but method {method.name!r} as configured "
             "reads dataset latents" + (" (rollout_mode data_latent; simulate needs only text)"
                                        if method.name == "dmd2" else "") + "; give t2v data (latents and text)")
    if method.check is not None:
        updates = method.check(method_config, training, CheckContext(where, resolved.origins))
        if updates:
            training = training.replace(**updates)
    family.check_training(training, where)
    _check_ranges(training, where)

    given = {f"training.{k}" for k in given_training} | {f"pipeline_config.{k}" for k in pipeline_given.values}
    given |= {f"method_config.{k}" for k in resolved.found}
    given |= {f"{roles_key}.{name}.{k}" for name, spec in F.mapping(raw[roles_key], where, roles_key).items()
              for k in spec}
    ignored = [(f"training.{k}", TRAINING_FIELDS[k].metadata["doc"]) for k in sorted(given_training)
               if TRAINING_FIELDS[k].metadata["status"] == IGNORED]
    ignored += [(pipeline_given.key(k), PIPELINE_FIELDS[k].metadata["doc"]) for k in sorted(pipeline_given.values)
                if PIPELINE_FIELDS[k].metadata["status"] == IGNORED]
    # A method value read from another place (Phase 2's training:/pipeline_config:) is shown there.
    shown = {f"method_config.{name}": key for name, (_, key) in resolved.origins.items()
             if name in resolved.found and key != f"method_config.{name}"}
    provenance = Provenance(written=shown, given=frozenset(given), ignored=tuple(ignored))
    if translation is not None:
        shown = {k: translation.written_key(v) for k, v in shown.items()}
        provenance = Provenance(written={**translation.written, **shown}, defaults=translation.defaults,
                                given=frozenset(k for k in given if k not in translation.defaults),
                                ignored=tuple((translation.written_key(k) if k.startswith(("training.", "pipeline_"))
                                               else k, why) for k, why in ignored) + tuple(translation.ignored))
    return Recipe(
        # a variant's recipe is its base family's (wan_causal -> wan): one experiment whether the recipe
        # names the causal student's family or the Wan's, in every schema; the roles keep their own
        family=family.kin, method=method_name, roles=roles, training=training,
        pipeline=PipelineConfig(**{k: v for k, v in pipeline_values.items()
                                   if PipelineConfig.__dataclass_fields__[k].metadata["status"] == "used"}),
        method_config=method_config, mesh=mesh,
        source=Path(where) if where else None, text=text,
        form="fastvideo_train" if translation else "phase2" if selector_key == "distill" else "phase3",
        roles_key=roles_key, training_given=frozenset(given_training), provenance=provenance)

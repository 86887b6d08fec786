"""What a training method gives the rest of fvjax: one `MethodSpec` (registered by name), whose parts are

- `roles`: the role names it uses and whether each must be trainable (DMD2 keeps the teacher frozen);
- `config_cls` + `params`: its frozen config dataclass (the only part of the recipe its update sees) and
  where each field may be written (`fvjax.schema.params`: method_config, and for FastVideo's older forms
  training / pipeline_config);
- `check`: invariants across its config and TrainingArgs; it may return TrainingArgs updates;
- `update`: the factory of its pure update, `make(config, models, compute_dtype)` ->
  `update(states, frozen, batch, key) -> (states, metrics)`; a "module:function" string is imported only
  when training starts, so loading a recipe never imports the models;
- hooks for what would otherwise be special cases elsewhere: `frozen_extras` (arrays prepared once at
  start and passed, never donated, beside the frozen roles: DMD2's negative prompt), `validation_samplers`
  (how validation renders its videos; default: UniPC with CFG), `optimizer_overrides` (per-role optimizer
  fields: DMD2's critic reads fake_score_*), `ema_roles`, `input_files` (files the dry run checks),
  `data` (what each batch must hold) and `train_data` (batches of the method's own making: KD's trajectories).

Metrics are named `<role>/<quantity>`; any non-finite metric stops the run.
A method is one folder (its config, its update, its spec) and one registry entry: a built-in line in
`fvjax/methods/registry.py`, an entry point in the group "fvjax.methods", or `register_method(spec)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from fvjax.schema.params import Param
from fvjax.schema.training_args import ExecutionMode, TrainingArgs

LATENTS_AND_TEXT = "latents+text"   # batches hold dataset latents and text embeddings
TEXT_ONLY = "text"                  # only the text embeddings are read (latents give the shape at most)


@dataclasses.dataclass(frozen=True)
class RoleRequirement:
    name: str
    trainable: bool
    why: str
    optional: bool = False                         # the recipe may leave it out (KD's teacher, once its cache is made)
    families: tuple[str, ...] = ()                 # the role's family must be one of these (empty: any of the recipe's)


@dataclasses.dataclass(frozen=True)
class CheckContext:
    where: object                                  # the recipe file
    origins: dict[str, tuple[object, str]]         # config field -> (file, dotted key) it came from


@dataclasses.dataclass(frozen=True)
class ExtrasContext:
    """What `frozen_extras` may use: the built models, each role's weights path, the family."""
    models: Mapping[str, Any]                      # role -> fvjax.training.roles.RoleModel
    role_paths: Mapping[str, str]
    family: Any                                    # fvjax.families.Family
    where: object
    abstract: bool = False                         # only shapes and dtypes matter: read nothing, encode nothing


@dataclasses.dataclass(frozen=True)
class ValidationContext:
    """The recipe's validation settings, for `validation_samplers`."""
    sampling_steps: tuple[int, ...]                # training.validation_sampling_steps
    guidance_scales: tuple[float, ...]             # training.validation_guidance_scale
    sampler_kind: str                              # pipeline_config.sampler_kind
    flow_shift: float
    where: object


@dataclasses.dataclass(frozen=True)
class FastVideoMethodContext:
    """What `from_fastvideo` may use besides the `method:` block."""
    where: object
    student_flow_shift: float              # models.<sampled role>.flow_shift (FastVideo's default 3.0)
    target: str = ""                       # the block's _target_ (a spec may stand for several classes)


@dataclasses.dataclass(frozen=True)
class DataContext:
    """What `train_data` may use: the recipe, the built runtime (models, frozen params, mesh) and the
    DataConfig the trainer would read training.data_path with."""
    recipe: Any                                    # fvjax.schema.recipe.Recipe
    runtime: Any                                   # fvjax.training.roles.Runtime
    data_config: Any                               # fvjax.data.batches.DataConfig


Check = Callable[[Any, TrainingArgs, CheckContext], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    mode: ExecutionMode
    roles: tuple[RoleRequirement, ...]
    config_cls: type
    params: tuple[Param, ...]
    update: str | Callable                         # "module:function" or the factory itself
    check: Check | None = None
    # What the method needs of its roles' architectures, checked once their configs are known (the dry run's
    # and the trainer's preflight, with the recipe's file): (config, {role: model config}, {role: RoleSpec})
    # -> None, `fvjax.errors.fail(None, key, ...)` on a mismatch. make_update may call the same checks.
    check_models: Callable[[Any, Mapping[str, Any], Mapping[str, Any]], None] | None = None
    input_files: Callable[[Any], tuple[tuple[str, str], ...]] | None = None   # (dotted key, path); "" skipped
    frozen_extras: Callable[[Any, ExtrasContext], dict[str, dict[str, Any]]] | None = None
    validation_samplers: Callable[[Any, ValidationContext], list] | None = None   # -> [SamplerSpec]
    optimizer_overrides: Callable[[Any, str], dict[str, Any]] | None = None       # (config, role) -> fields
    ema_roles: tuple[str, ...] = ("student",)      # roles that keep an EMA when training.ema_decay > 0
    sampled_role: str = "student"                  # validation renders it; the data's shapes follow it
    data: str | Callable[[Any], str] = LATENTS_AND_TEXT   # or a function of the config
    # Model FLOPs of one step (mean over steps) from each role's forward FLOPs per sample and the global
    # batch: (config, {role: forward FLOPs}, batch) -> FLOPs. None: the report says "not known".
    step_flops: Callable[[Any, Mapping[str, float], int], float] | None = None
    # The method's own training data in place of training.data_path's batches (KD: the teacher-trajectory
    # cache, completed first): (config, DataContext) -> a fvjax.data.batches.TrainData. None: the dataset's.
    train_data: Callable[[Any, DataContext], Any] | None = None
    # FastVideo's current schema (`method: {_target_: ..., ...}`): the method classes this spec stands for
    # and how such a block becomes this method's `method_config` (its own defaults made explicit there);
    # None: the block's keys are taken as method_config keys unchanged.
    fastvideo_targets: tuple[str, ...] = ()
    from_fastvideo: Callable[[dict, "FastVideoMethodContext"], dict] | None = None
    # The inverse, for `python -m fvjax.recipe upgrade`: (config, recipe file, spell: canonical key -> the
    # recipe's own) -> the `method:` block's keys (its current-schema defaults left out). None: the upgrade
    # writes only the methods it knows itself (dmd2, finetune).
    to_fastvideo: Callable[[Any, object, Callable[[str], str]], dict] | None = None

    def data_needs(self, config: Any) -> str:
        """LATENTS_AND_TEXT or TEXT_ONLY for this config (the dry run says which; text-only datasets are
        read once the data pipeline accepts them)."""
        return self.data(config) if callable(self.data) else self.data

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)

    def make_update(self) -> Callable:
        if callable(self.update):
            return self.update
        from fvjax.plugins import load_object

        return load_object(self.update)

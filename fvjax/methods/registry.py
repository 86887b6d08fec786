"""Registry of training methods: the roles each needs, its config slice and its invariants.

A method is looked up by `recipe.method`. Registration is explicit (below), and registering a name twice
is a programming error. Each `MethodSpec` declares:
- `roles`: the role names it uses and whether each must be trainable (DMD2 keeps the teacher frozen);
- `config_cls` + `params`: its frozen config dataclass and where each field may be written;
- `check`: invariants across the resolved config and TrainingArgs; it may return TrainingArgs updates.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from fvjax.errors import fail
from fvjax.methods.dmd2_config import DMD2_PARAMS, DMD2Config
from fvjax.methods.finetune_config import FINETUNE_PARAMS, FinetuneConfig
from fvjax.recipe.method_params import Param
from fvjax.recipe.training_args import ExecutionMode, TrainingArgs


@dataclasses.dataclass(frozen=True)
class RoleRequirement:
    name: str
    trainable: bool
    why: str


@dataclasses.dataclass(frozen=True)
class CheckContext:
    where: object                                  # the recipe file
    origins: dict[str, tuple[object, str]]         # config field -> (file, dotted key) it came from


Check = Callable[[Any, TrainingArgs, CheckContext], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    mode: ExecutionMode
    roles: tuple[RoleRequirement, ...]
    config_cls: type
    params: tuple[Param, ...]
    check: Check | None = None
    # "module:function" building the pure update, make(config, models, compute_dtype); imported only when
    # training starts, so loading a recipe never imports the models.
    update_factory: str = ""
    # Files the method reads, as (dotted key, path) for a given config; empty paths are skipped. The
    # dry-run lists the missing ones and a real run refuses to start on them.
    input_files: Callable[[Any], tuple[tuple[str, str], ...]] | None = None

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    if spec.name in _METHODS:
        raise KeyError(f"method {spec.name!r} is already registered")
    _METHODS[spec.name] = spec
    return spec


def available_methods() -> tuple[str, ...]:
    return tuple(sorted(_METHODS))


def get_method(name: str, where: object = None, key: str = "recipe.method") -> MethodSpec:
    if name not in _METHODS:
        fail(where, key, f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _METHODS[name]


def _check_dmd2(config: DMD2Config, training: TrainingArgs, ctx: CheckContext) -> dict[str, Any]:
    if config.min_timestep_ratio > config.max_timestep_ratio:
        where, key = ctx.origins["max_timestep_ratio"]
        fail(where, key, f"is {config.max_timestep_ratio}, below min_timestep_ratio "
             f"{config.min_timestep_ratio}")
    n = len(config.dmd_denoising_steps)
    if not training.validation_sampling_steps:
        return {"validation_sampling_steps": (n,)}  # FastVideo: DMD validation samples the few-step schedule
    if training.validation_sampling_steps != (n,):
        fail(ctx.where, "training.validation_sampling_steps",
             f"is {','.join(map(str, training.validation_sampling_steps))} but DMD2 validation samples the "
             f"{n}-step dmd_denoising_steps schedule; set it to \"{n}\" or remove it")
    return {}


def _check_finetune(config: FinetuneConfig, training: TrainingArgs, ctx: CheckContext) -> dict[str, Any]:
    if not training.learning_rate > 0:
        fail(ctx.where, "training.learning_rate", f"is {training.learning_rate}; finetuning needs "
             "learning_rate > 0")
    return {}


DMD2 = register_method(MethodSpec(
    name="dmd2",
    mode=ExecutionMode.DISTILLATION,
    update_factory="fvjax.methods.dmd2:make_update",
    roles=(
        RoleRequirement("student", True, "DMD2 trains the few-step student"),
        RoleRequirement("teacher", False, "DMD2 uses the teacher as a fixed reference (real score)"),
        RoleRequirement("critic", True, "DMD2 trains the critic (fake score) every step"),
    ),
    config_cls=DMD2Config,
    params=DMD2_PARAMS,
    check=_check_dmd2,
    input_files=lambda c: (("method_config.negative_prompt_embedding", c.negative_prompt_embedding),),
))

FINETUNE = register_method(MethodSpec(
    name="finetune",
    mode=ExecutionMode.FINETUNING,
    update_factory="fvjax.methods.finetune:make_update",
    roles=(RoleRequirement("student", True, "finetuning trains the student"),),
    config_cls=FinetuneConfig,
    params=FINETUNE_PARAMS,
    check=_check_finetune,
))

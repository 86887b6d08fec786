"""Causal consistency distillation (FastVideo's CausalConsistencyDistillationMethod, spec
fastvideo_distillation.md §5): a causal student distilled, under clean-history teacher forcing, to match
at t_i an EMA of itself at t_{i+1}, the next point of a discrete grid, reached by one CFG Euler step of a
frozen teacher. config.py (its slice of the recipe), update.py (the pure update), fastvideo_train.py
(FastVideo's current schema) and its registry entry below, which reuses DMD2's negative prompt.

The ema role. FastVideo's recipe has `models.ema` (a frozen WanCausalModel from the student's checkpoint)
that the method moves after every optimizer step and saves in checkpoints. fvjax's frozen roles are
constants (never donated, never checkpointed), so the moving weights live where fvjax keeps a trainable
role's EMA: the student's `RoleState.ema`, with causal_cd's own rule (ema_decay, ema_start_step; before
that step the ema keeps its starting weights), set through `optimizer_overrides` so the slot exists. So a
FastVideo recipe loads and plans as written (`models.ema` is a required frozen role: its weights are the
target's starting point, read at the first step; from the same checkpoint as the teacher they are the
teacher's one frozen copy), a checkpoint holds the target (resume is bit-exact) and the run ends with
`student_ema/` next to `student/`: FastVideo's ema role's weights. Cost: callbacks.ema (training.ema_decay,
a second EMA of the student for validation) cannot be kept beside it and is refused.
"""
from __future__ import annotations

from typing import Any

from fvjax.errors import fail
from fvjax.methods import dmd2
from fvjax.methods.api import CheckContext, MethodSpec, RoleRequirement
from fvjax.methods.causal_cd import fastvideo_train
from fvjax.methods.causal_cd.config import CAUSAL_CD_PARAMS, CausalCDConfig
from fvjax.schema.training_args import ExecutionMode, TrainingArgs


def _check(config: CausalCDConfig, training: TrainingArgs, ctx: CheckContext) -> dict[str, Any]:
    if not training.learning_rate > 0:
        fail(ctx.where, "training.learning_rate", f"is {training.learning_rate}; causal_cd needs learning_rate > 0")
    if training.ema_decay > 0:
        fail(ctx.where, "training.ema_decay", f"is {training.ema_decay:g}; causal_cd's EMA is the ema role "
             "(method ema_decay / ema_start_step), kept in the student's EMA slot: remove the EMA callback")
    return {}


def _ema_slot(config: CausalCDConfig, role: str) -> dict[str, Any]:
    """The student's EMA slot holds the ema role (update.py applies causal_cd's rule to it)."""
    return {"ema_decay": config.ema_decay, "ema_start_step": config.ema_start_step} if role == "student" else {}


def _step_flops(config: CausalCDConfig, forward: dict[str, float], batch: int) -> float:
    """Every forward runs over [clean | noisy] (two forwards' worth): the teacher twice (conditional and
    negative prompt), the ema once, the student once with its backward (2x)."""
    return 2 * batch * (2 * forward["teacher"] + forward["ema"] + 3 * forward["student"])


def _check_models(config: CausalCDConfig, models: dict[str, Any], roles: dict[str, Any]) -> None:
    from fvjax.methods.causal_cd.update import check_roles
    check_roles(models, roles["student"].lora)


METHOD = MethodSpec(
    name="causal_cd",
    mode=ExecutionMode.DISTILLATION,
    update="fvjax.methods.causal_cd.update:make_update",
    roles=(
        RoleRequirement("student", True, "causal_cd trains the causal student", families=("wan_causal",)),
        RoleRequirement("teacher", False, "causal_cd's teacher takes the frozen CFG Euler step, teacher-forced",
                        families=("wan_causal",)),
        RoleRequirement("ema", False, "causal_cd's consistency target starts from the ema role's weights (then moves "
                        "as the student's EMA)", families=("wan_causal",)),
    ),
    config_cls=CausalCDConfig,
    params=CAUSAL_CD_PARAMS,
    check=_check,
    check_models=_check_models,
    input_files=lambda c: (("method_config.negative_prompt_embedding", c.negative_prompt_embedding),),
    frozen_extras=dmd2._negative_prompt,
    optimizer_overrides=_ema_slot,
    ema_roles=(),
    step_flops=_step_flops,
    fastvideo_targets=fastvideo_train.TARGETS,
    from_fastvideo=fastvideo_train.from_fastvideo,
    to_fastvideo=fastvideo_train.to_fastvideo,
)

"""Diffusion-forcing SFT (FastVideo's DiffusionForcingSFTMethod, spec self_forcing.md §2): a causal student
finetuned with flow matching where each chunk of latent frames has its own noise level. config.py (its slice
of the recipe), update.py (the pure update), its registry entries below: `dfsft`, and `tfsft` (FastVideo's
TeacherForcingSFTMethod: the same method with the clean latents as the attention's history)."""
from __future__ import annotations

import dataclasses
from typing import Any

from fvjax.errors import fail
from fvjax.methods.api import CheckContext, MethodSpec, RoleRequirement
from fvjax.methods.dfsft import fastvideo_train
from fvjax.methods.dfsft.config import DFSFT_PARAMS, DFSFTConfig
from fvjax.schema.training_args import ExecutionMode, TrainingArgs


def _checker(name: str):
    def check(config: DFSFTConfig, training: TrainingArgs, ctx: CheckContext) -> dict[str, Any]:
        if not training.learning_rate > 0:
            fail(ctx.where, "training.learning_rate", f"is {training.learning_rate}; {name} needs learning_rate > 0")
        if config.max_timestep_ratio < config.min_timestep_ratio:
            where, key = ctx.origins.get("max_timestep_ratio", (ctx.where, "method_config.max_timestep_ratio"))
            fail(where, key, f"is {config.max_timestep_ratio}, below min_timestep_ratio {config.min_timestep_ratio}")
        return {}

    return check


def _model_checker(teacher_forcing: bool):
    def check_models(config: DFSFTConfig, models: dict[str, Any], roles: dict[str, Any]) -> None:
        from fvjax.methods.dfsft.update import check_chunk_size, check_teacher_forcing
        check_chunk_size(config, models["student"])
        if teacher_forcing:
            check_teacher_forcing(models["student"])

    return check_models


METHOD = MethodSpec(
    name="dfsft",
    mode=ExecutionMode.FINETUNING,
    update="fvjax.methods.dfsft.update:make_update",
    roles=(RoleRequirement("student", True, "diffusion-forcing SFT trains the causal student"),),
    config_cls=DFSFTConfig,
    params=DFSFT_PARAMS,
    check=_checker("dfsft"),
    check_models=_model_checker(teacher_forcing=False),
    step_flops=lambda config, forward, batch: 3 * forward["student"] * batch,   # forward + backward (2x)
    fastvideo_targets=fastvideo_train.TARGETS,
    from_fastvideo=fastvideo_train.from_fastvideo,
    to_fastvideo=fastvideo_train.to_fastvideo,
)

# The student's forward runs over [clean | noisy]: twice the tokens through every layer, and each half's
# attention is about one block-causal forward's (noisy block i: the i blocks of clean history and itself).
# Counted as two forwards.
TEACHER_FORCING_METHOD = dataclasses.replace(
    METHOD,
    name="tfsft",
    update="fvjax.methods.dfsft.update:make_teacher_forcing_update",
    roles=(RoleRequirement("student", True, "teacher-forcing SFT trains the causal student"),),
    check=_checker("tfsft"),
    check_models=_model_checker(teacher_forcing=True),
    step_flops=lambda config, forward, batch: 6 * forward["student"] * batch,
    fastvideo_targets=fastvideo_train.TEACHER_FORCING_TARGETS,
)

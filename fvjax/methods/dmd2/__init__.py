"""DMD2 distillation (FastVideo's design branch): config.py (its slice of the recipe), update.py (the pure
update), rollout.py and schedule.py (its maths), negative_prompt.py (the teacher's unconditional text),
and its registry entry below with the hooks that make it more than a plain update: the negative prompt
prepared once at start, the critic's fake_score_* optimizer, validation with the few-step chain."""
from __future__ import annotations

from typing import Any

from fvjax.errors import fail
from fvjax.methods.api import (LATENTS_AND_TEXT, TEXT_ONLY, CheckContext, ExtrasContext, MethodSpec, RoleRequirement,
                               ValidationContext)
from fvjax.methods.dmd2 import fastvideo_train
from fvjax.methods.dmd2.config import DMD2_PARAMS, SIMULATE, DMD2Config
from fvjax.schema.training_args import ExecutionMode, TrainingArgs

NEGATIVE_PROMPT = "negative_prompt"   # frozen["negative_prompt"] = {"embeds": [L, D], "mask": [L]}


def _check(config: DMD2Config, training: TrainingArgs, ctx: CheckContext) -> dict[str, Any]:
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


def _critic_optimizer(config: DMD2Config, role: str) -> dict[str, Any]:
    """FastVideo's critic reads the fake_score_* fields (the loader resolved where they were written);
    a learning rate of 0 falls back to the student's."""
    if role != "critic":
        return {}
    overrides = {"betas": config.fake_score_betas, "lr_scheduler": config.fake_score_lr_scheduler}
    if config.fake_score_learning_rate > 0:
        overrides["learning_rate"] = config.fake_score_learning_rate
    return overrides


def _negative_prompt(config: DMD2Config, ctx: ExtrasContext) -> dict[str, dict[str, Any]]:
    from fvjax.methods.dmd2.negative_prompt import teacher_negative_prompt

    return {NEGATIVE_PROMPT: teacher_negative_prompt(config, ctx)}


def _step_flops(config: DMD2Config, forward: dict[str, float], batch: int) -> float:
    """Mean model FLOPs per step of fvjax's update (backward = 2 forwards; remat recomputation not counted).
    Every step the critic: a no-grad student rollout (simulate: n forwards from noise, data_latent: 1) and
    its own forward + backward. Generator steps (1 in generator_update_interval) add the student's rollout
    (simulate: n - 1 no-grad forwards and the exit forward with its backward, data_latent: that last
    one), one critic and two teacher forwards (conditional and negative prompt)."""
    n = len(config.dmd_denoising_steps)
    simulate = config.rollout_mode == SIMULATE
    critic_step = (n if simulate else 1) * forward["student"] + 3 * forward["critic"]
    generator_step = ((n - 1 if simulate else 0) + 3) * forward["student"] + forward["critic"] + 2 * forward["teacher"]
    interval = max(1, config.generator_update_interval)
    return batch * (critic_step + generator_step / interval)


def _few_step_validation(config: DMD2Config, ctx: ValidationContext) -> list:
    from fvjax.inference.sampling import SamplerSpec
    from fvjax.methods.dmd2.schedule import denoising_steps

    # (validation_sampling_steps, if given, was checked against len(dmd_denoising_steps) with the recipe)
    steps = tuple(float(s) for s in denoising_steps(config))
    return [SamplerSpec(kind="dmd", denoising_steps=steps, shift=config.flow_shift)]


METHOD = MethodSpec(
    name="dmd2",
    mode=ExecutionMode.DISTILLATION,
    update="fvjax.methods.dmd2.update:make_update",
    roles=(
        RoleRequirement("student", True, "DMD2 trains the few-step student"),
        RoleRequirement("teacher", False, "DMD2 uses the teacher as a fixed reference (real score)"),
        RoleRequirement("critic", True, "DMD2 trains the critic (fake score) every step"),
    ),
    config_cls=DMD2Config,
    params=DMD2_PARAMS,
    check=_check,
    input_files=lambda c: (("method_config.negative_prompt_embedding", c.negative_prompt_embedding),),
    frozen_extras=_negative_prompt,
    validation_samplers=_few_step_validation,
    optimizer_overrides=_critic_optimizer,
    # The simulated rollout starts from noise: only the text embeddings (and the latents' shape) are read.
    data=lambda c: TEXT_ONLY if c.rollout_mode == SIMULATE else LATENTS_AND_TEXT,
    step_flops=_step_flops,
    fastvideo_targets=fastvideo_train.TARGETS,
    from_fastvideo=fastvideo_train.from_fastvideo,
)

"""Knowledge distillation / ODE initialisation (FastVideo's KDMethod and KDCausalMethod, spec
self_forcing.md §4): config.py (its slice of the recipe), schedule.py (the teacher's trajectory grid),
cache.py (the on-disk trajectory cache and the data read from it), generate.py (the teacher's trajectories,
made by `python -m fvjax.kd_cache` or at the start of training), update.py (the student's x0 regression),
and its registry entry below.

Its data is the trajectory cache, not training.data_path: that dataset gives the prompts (text embeddings)
and the latents' shape of the trajectories the teacher makes from noise.
"""
from __future__ import annotations

from typing import Any

from fvjax.errors import fail
from fvjax.methods.api import TEXT_ONLY, CheckContext, DataContext, MethodSpec, RoleRequirement
from fvjax.methods.kd import fastvideo_train
from fvjax.methods.kd.config import KD_PARAMS, KDConfig
from fvjax.methods.kd.schedule import state_indices, trajectory_timesteps
from fvjax.schema.training_args import ExecutionMode, TrainingArgs


def _check(config: KDConfig, training: TrainingArgs, ctx: CheckContext) -> dict[str, Any]:
    if not training.learning_rate > 0:
        fail(ctx.where, "training.learning_rate", f"is {training.learning_rate}; KD needs learning_rate > 0")
    if config.student_sample_steps is not None and config.student_sample_steps != config.student_steps:
        where, key = ctx.origins.get("student_sample_steps", (ctx.where, "method_config.student_sample_steps"))
        fail(where, key, f"is {config.student_sample_steps} but t_list {list(config.t_list)} has "
             f"{config.student_steps} steps (len(t_list) - 1)")
    if config.clean_context and config.step_index != "block":
        where, key = ctx.origins.get("clean_context", (ctx.where, "method_config.clean_context"))
        fail(where, key, "is true, which needs step_index: block (clean blocks are context for later blocks)")
    trajectory = trajectory_timesteps(config.teacher_inference_steps, config.flow_shift, config.num_train_timesteps)
    _, missing = state_indices(config.t_list, trajectory)
    if missing is not None:
        position, nearest = missing
        where, key = ctx.origins.get("t_list", (ctx.where, "method_config.t_list"))
        fail(where, f"{key}[{position}]", f"is {config.t_list[position]}, not a timestep of the teacher's "
             f"{config.teacher_inference_steps}-step trajectory (shift {config.flow_shift:g}); the nearest is {nearest}")
    return {}


def _trajectory_data(config: KDConfig, ctx: DataContext):
    from fvjax.methods.kd.generate import trajectory_data

    return trajectory_data(config, ctx)


METHOD = MethodSpec(
    name="kd",
    mode=ExecutionMode.DISTILLATION,
    update="fvjax.methods.kd.update:make_update",
    roles=(
        RoleRequirement("student", True, "KD trains the student on the teacher's trajectories"),
        RoleRequirement("teacher", False, "the teacher only makes the trajectory cache (not needed once it is "
                                          "complete)", optional=True),
    ),
    config_cls=KDConfig,
    params=KD_PARAMS,
    check=_check,
    train_data=_trajectory_data,
    data=TEXT_ONLY,   # of training.data_path only the prompts and the latents' shape are read
    # One student forward and its backward per step (the teacher's trajectories are made once, before).
    step_flops=lambda config, forward, batch: 3 * forward["student"] * batch,
    fastvideo_targets=fastvideo_train.TARGETS,
    from_fastvideo=fastvideo_train.from_fastvideo,
    to_fastvideo=fastvideo_train.to_fastvideo,
)

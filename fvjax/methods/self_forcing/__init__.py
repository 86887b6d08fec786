"""Self-Forcing (spec self_forcing.md §3): DMD2 distillation of a causal, chunk-autoregressive student
trained on its own chunk-by-chunk few-step rollout through its KV cache. config.py (DMD2's knobs plus the
rollout's), schedule.py (the Self-Forcing grid, warp, exit steps), rollout.py (the two-phase rollout),
update.py (DMD2's update with that rollout), validation.py (validation videos with the causal streaming
sampler), fastvideo_train.py (FastVideo's current schema), and its
registry entry below, which reuses DMD2's hooks (negative prompt, critic optimizer, recipe checks)."""
from __future__ import annotations

from typing import Any, Mapping

from fvjax.methods import dmd2
from fvjax.methods.api import TEXT_ONLY, MethodSpec, RoleRequirement
from fvjax.methods.self_forcing import fastvideo_train
from fvjax.methods.self_forcing.config import SELF_FORCING_PARAMS, SelfForcingConfig
from fvjax.methods.self_forcing.validation import streaming_validation
from fvjax.schema.training_args import ExecutionMode


def _step_flops(config: SelfForcingConfig, forward: Mapping[str, float], batch: int) -> float:
    """Mean model FLOPs per step (backward = 2 forwards). Chunk forwards are counted as a share of the
    student's whole-video forward (chunk c: its frames' share; all chunks: one whole forward), so one
    rollout costs (mean exit step + 1 + 1 context pass) whole forwards: n + 1 with last_step_only, else
    (n - 1) / 2 + 2 for n denoising steps. Every step the critic: a no-grad rollout and its own forward and
    backward. Generator steps (1 in generator_update_interval) add a rollout, the grad pass with its
    backward (3), one critic and two teacher forwards (conditional and negative prompt)."""
    n = len(config.dmd_denoising_steps)
    rollout = ((n - 1) if config.last_step_only else (n - 1) / 2) + 2
    critic_step = rollout * forward["student"] + 3 * forward["critic"]
    generator_step = (rollout + 3) * forward["student"] + forward["critic"] + 2 * forward["teacher"]
    interval = max(1, config.generator_update_interval)
    return batch * (critic_step + generator_step / interval)


def _check_models(config: SelfForcingConfig, models: Mapping[str, Any], roles: Mapping[str, Any]) -> None:
    from fvjax.methods.self_forcing.update import check_roles
    check_roles(config, models)


METHOD = MethodSpec(
    name="self_forcing",
    mode=ExecutionMode.DISTILLATION,
    update="fvjax.methods.self_forcing.update:make_update",
    roles=(
        RoleRequirement("student", True, "Self-Forcing trains the causal few-step student on its own chunk-by-chunk "
                                         "rollout", families=("wan_causal",)),
        RoleRequirement("teacher", False, "Self-Forcing's teacher is the frozen bidirectional real score of the whole "
                                          "video", families=("wan",)),
        RoleRequirement("critic", True, "Self-Forcing's critic is the bidirectional fake score of the whole video, "
                                        "trained every step", families=("wan",)),
    ),
    config_cls=SelfForcingConfig,
    params=SELF_FORCING_PARAMS,
    check=dmd2._check,
    check_models=_check_models,
    input_files=dmd2.METHOD.input_files,
    frozen_extras=dmd2._negative_prompt,
    validation_samplers=streaming_validation,     # the causal streaming sampler (validation.py)
    optimizer_overrides=dmd2._critic_optimizer,
    data=TEXT_ONLY,                        # the rollout starts from noise: text embeddings (and a shape) only
    step_flops=_step_flops,
    fastvideo_targets=fastvideo_train.TARGETS,
    from_fastvideo=fastvideo_train.from_fastvideo,
    to_fastvideo=fastvideo_train.to_fastvideo,
)

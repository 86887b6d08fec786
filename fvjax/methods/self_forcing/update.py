"""Self-Forcing's pure update: DMD2's (fvjax/methods/dmd2/update.py: the generator's DMD loss against the
frozen bidirectional teacher with CFG, the critic's flow-matching loss on a separate no-grad rollout,
generator_update_interval, EMA) on Self-Forcing's grid, with the causal student's chunk-by-chunk rollout
(rollout.py) in place of DMD2's whole-video chain."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from fvjax.errors import fail
from fvjax.methods.dmd2.update import make_losses
from fvjax.methods.dmd2.update import make_update as make_dmd2_update
from fvjax.methods.self_forcing.config import SelfForcingConfig
from fvjax.methods.self_forcing.rollout import make_rollout
from fvjax.methods.self_forcing.schedule import SelfForcingLevels, denoising_steps
from fvjax.training.roles import RoleModel


def rollout_steps(cfg: SelfForcingConfig):
    return denoising_steps(cfg.dmd_denoising_steps, cfg.warp_denoising_step, cfg.flow_shift, cfg.num_train_timesteps)


def check_roles(cfg: SelfForcingConfig, configs: Mapping[str, Any]) -> None:
    """The student must be the causal Wan with blocks of chunk_size frames (its block-causal grad pass and
    the rollout's chunks are one partition of the frames); the teacher and the critic bidirectional.
    configs: role -> model config (MethodSpec.check_models)."""
    models_config = configs.__getitem__
    blocks = getattr(models_config("student"), "num_frames_per_block", None)
    if blocks is None:
        fail(None, "models.student", "Self-Forcing needs a causal student (the causal Wan: family wan_causal, or "
             "FastVideo's WanCausalModel); this one is bidirectional")
    for name in ("teacher", "critic"):
        if getattr(models_config(name), "num_frames_per_block", None) is not None:
            fail(None, f"models.{name}", "Self-Forcing's teacher and critic score the whole video: they must be "
                 "the bidirectional Wan (family wan, FastVideo's WanModel), not the causal one")
    if blocks != cfg.chunk_size:
        fail(None, "method_config.chunk_size", f"is {cfg.chunk_size} but the causal student's num_frames_per_block is "
             f"{blocks}; they must be equal (the rollout's chunks are the student's causal blocks)")


def make_update(cfg: SelfForcingConfig, models: dict[str, RoleModel], compute_dtype) -> Callable:
    check_roles(cfg, {name: model.config for name, model in models.items()})
    levels = SelfForcingLevels(cfg.flow_shift, cfg.num_train_timesteps)
    rollout = make_rollout(cfg, models["student"], rollout_steps(cfg), levels, compute_dtype)
    losses = make_losses(cfg, models, compute_dtype, levels=levels, rollout=rollout)
    return make_dmd2_update(cfg, models, compute_dtype, losses)

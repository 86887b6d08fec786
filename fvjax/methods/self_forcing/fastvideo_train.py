"""Self-Forcing in FastVideo's current schema (`method: {_target_: ...SelfForcingMethod, ...}`, spec
fastvideo_v3_recipes.md §2.3): DMD2's translation (fvjax/methods/dmd2/fastvideo_train.py: required keys,
standard CFG with w = 1.0, generator_update_interval 1, cfg_uncond) and then what SelfForcingMethod does
differently:
- rollout_mode must be simulate;
- one shift, pipeline.flow_shift, for the grid, the warp and the score timesteps (models.student.flow_shift
  is not read);
- min/max_timestep_ratio are validated (0 <= min <= max <= 1) but not applied: the score timesteps are
  clamped to [0, 1000] only;
- its own keys, with its defaults (chunk_size 3, sde, same_step_across_blocks false, last_step_only false,
  context_noise 0, enable_gradient_in_rollout true, start_gradient_frame 0).
"""
from __future__ import annotations

from typing import Callable

from fvjax.errors import fail
from fvjax.methods.api import FastVideoMethodContext
from fvjax.methods.dmd2 import fastvideo_train as dmd2
from fvjax.schema import fields as F

TARGETS = ("fastvideo.train.methods.distribution_matching.self_forcing.SelfForcingMethod",
           "fastvideo.train.methods.distribution_matching.SelfForcingMethod",
           "fastvideo.train.methods.SelfForcingMethod")
DEFAULTS = {"chunk_size": 3, "student_sample_type": "sde", "same_step_across_blocks": False, "last_step_only": False,
            "context_noise": 0.0, "enable_gradient_in_rollout": True, "start_gradient_frame": 0}


def from_fastvideo(block: dict, ctx: FastVideoMethodContext) -> dict:
    where = ctx.where
    if "rollout_mode" in block:
        mode = F.read_str(block["rollout_mode"], where, "method.rollout_mode").strip().lower()
        if mode not in ("simulate", "sim"):
            fail(where, "method.rollout_mode", f"is {block['rollout_mode']!r}; FastVideo's SelfForcingMethod only "
                 "supports simulate")
    low, high = (F.null_means(default, F.read_float)(block.get(key), where, f"method.{key}")
                 for key, default in (("min_timestep_ratio", 0.0), ("max_timestep_ratio", 1.0)))
    if not 0 <= low <= high <= 1:
        fail(where, "method.max_timestep_ratio", f"min_timestep_ratio {low} and max_timestep_ratio {high} must satisfy "
             "0 <= min <= max <= 1")
    values = dmd2.from_fastvideo(block, ctx)
    values.pop("student_flow_shift", None)
    values.update(min_timestep_ratio=0.0, max_timestep_ratio=1.0)
    for key, default in DEFAULTS.items():
        values.setdefault(key, default)
    return values


def to_fastvideo(config, where: object, spell: Callable[[str], str]) -> dict:
    """The `method:` block of `config` (the inverse of from_fastvideo): the required keys, then what differs
    from this schema's defaults; fvjax's own keys (real_score_guidance_form, negative_prompt*) when set."""
    for key, default in (("min_timestep_ratio", 0.0), ("max_timestep_ratio", 1.0)):
        if getattr(config, key) != default:
            fail(where, spell(f"method_config.{key}"), f"is {getattr(config, key)}; FastVideo's SelfForcingMethod "
                 "never applies it (its score timesteps span [0, 1000]), so the current schema cannot say it")
    if config.fake_score_learning_rate == 0:
        fail(where, spell("method_config.fake_score_learning_rate"), "is 0 and so is the student's learning_rate; "
             "FastVideo's current schema requires a non-zero critic learning rate")
    block = {"rollout_mode": config.rollout_mode, "dmd_denoising_steps": list(config.dmd_denoising_steps)}
    fvjax_own = {"real_score_guidance_form": "standard", "negative_prompt_embedding": "", "negative_prompt": None}
    for key, default in {**dmd2.DEFAULTS, **DEFAULTS, **fvjax_own}.items():
        if key not in ("min_timestep_ratio", "max_timestep_ratio") and getattr(config, key) != default:
            block[key] = getattr(config, key)
    block.update(fake_score_learning_rate=config.fake_score_learning_rate,
                 fake_score_betas=list(config.fake_score_betas), fake_score_lr_scheduler=config.fake_score_lr_scheduler)
    return block

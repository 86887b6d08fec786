"""DMD2 in FastVideo's current schema (`method: {_target_: ...DMD2Method, ...}`, spec
fastvideo_v3_recipes.md §2.2): its defaults differ from the design branch's, so they are written out here
into fvjax's `method_config` form.

- the teacher's CFG is standard, x_u + w (x_c - x_u), with w = 1.0 by default (design branch: x_c + w (x_c - x_u));
- generator_update_interval 1; score-timestep ratios 0 and 1;
- the critic's fake_score_learning_rate (non-zero), fake_score_betas and fake_score_lr_scheduler are required;
- the student's noise table (and warp) use models.student.flow_shift (default 3.0), the score timesteps
  the pipeline's flow_shift;
- `cfg_uncond` chooses the teacher's unconditional branch: fvjax implements the default (the encoded
  negative prompt); another policy is refused rather than ignored.
"""
from __future__ import annotations

from fvjax.errors import fail
from fvjax.methods.api import FastVideoMethodContext
from fvjax.methods.dmd2.config import CFG_STANDARD
from fvjax.schema import fields as F

TARGETS = ("fastvideo.train.methods.distribution_matching.dmd2.DMD2Method",
           "fastvideo.train.methods.distribution_matching.DMD2Method",
           "fastvideo.train.methods.DMD2Method")
REQUIRED = ("rollout_mode", "dmd_denoising_steps", "fake_score_learning_rate", "fake_score_betas",
            "fake_score_lr_scheduler")
DEFAULTS = {"generator_update_interval": 1, "real_score_guidance_scale": 1.0, "min_timestep_ratio": 0.0,
            "max_timestep_ratio": 1.0, "warp_denoising_step": False}
_UNCOND_KEYS = ("on_missing", "text")


def _check_cfg_uncond(value, where: object, key: str) -> None:
    if value is None:
        return
    for name, policy in F.mapping(value, where, key).items():
        sub = f"{key}.{name}"
        policy = F.read_str(policy, where, sub)
        if name == "on_missing":
            F.choice(("error", "ignore"))(policy, where, sub)
        elif name == "text":
            if policy != "negative_prompt":
                fail(where, sub, f"is {policy!r}: fvjax's DMD2 teacher takes the encoded negative prompt as its "
                     "unconditional branch (negative_prompt); other policies are not implemented yet")
        elif policy != "keep":
            fail(where, sub, f"is {policy!r}: a Wan T2V model has no {name!r} input; only 'keep' applies")


def from_fastvideo(block: dict, ctx: FastVideoMethodContext) -> dict:
    where = ctx.where
    for key in REQUIRED:
        if key not in block:
            fail(where, f"method.{key}", "missing; FastVideo's DMD2Method requires it (no default in its current "
                 "schema)")
    if F.read_float(block["fake_score_learning_rate"], where, "method.fake_score_learning_rate") == 0:
        fail(where, "method.fake_score_learning_rate", "is 0; FastVideo's DMD2Method requires the critic's "
             "learning rate (non-zero)")
    _check_cfg_uncond(block.get("cfg_uncond"), where, "method.cfg_uncond")
    values = {k: v for k, v in block.items() if k != "cfg_uncond"}
    for key, default in DEFAULTS.items():
        values.setdefault(key, default)
    values.setdefault("real_score_guidance_form", CFG_STANDARD)
    values.setdefault("student_flow_shift", ctx.student_flow_shift)
    return values

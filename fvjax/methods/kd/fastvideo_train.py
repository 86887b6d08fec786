"""KD in FastVideo's current schema (`method: {_target_: ...KDMethod | ...KDCausalMethod, ...}`, spec
fastvideo_v3_recipes.md §2.4): its keys are fvjax's, with these defaults written out:

- KDCausalMethod: one student step index per sample and block of `num_frames_per_block` (3) frames;
  KDMethod: one index for the whole batch (FastVideo draws one per step);
- teacher_inference_steps 48; the trajectory's shift is the pipeline's flow_shift (FastVideo's KD
  scheduler reads pipeline.flow_shift, not the student's own models.student.flow_shift);
- `teacher_guidance_scale` is parsed by FastVideo but not applied (its teacher runs conditional-only): the
  value is read and dropped, so the recipe trains what FastVideo trains (the examples write 3.5);
- `num_frames_per_block` belongs to KDCausalMethod (KDMethod ignores it in FastVideo; so does fvjax's batch
  step index).
"""
from __future__ import annotations

from fvjax.errors import fail
from fvjax.methods.api import FastVideoMethodContext
from fvjax.methods.kd.config import BATCH, BLOCK
from fvjax.schema import fields as F

_MODULE = "fastvideo.train.methods.knowledge_distillation"
CAUSAL_TARGETS = (f"{_MODULE}.kd.KDCausalMethod", f"{_MODULE}.KDCausalMethod", "fastvideo.train.methods.KDCausalMethod")
TARGETS = (f"{_MODULE}.kd.KDMethod", f"{_MODULE}.KDMethod", "fastvideo.train.methods.KDMethod") + CAUSAL_TARGETS
REQUIRED = ("t_list", "teacher_path_cache")


def from_fastvideo(block: dict, ctx: FastVideoMethodContext) -> dict:
    where = ctx.where
    for key in REQUIRED:
        if key not in block:
            fail(where, f"method.{key}", "missing; FastVideo's KD methods require it (no default)")
    if block.get("teacher_guidance_scale") is not None:   # read (a bad value is an error), then dropped
        F.read_float(block["teacher_guidance_scale"], where, "method.teacher_guidance_scale")
    values = {k: v for k, v in block.items() if k != "teacher_guidance_scale"}
    values["step_index"] = BLOCK if ctx.target in CAUSAL_TARGETS else BATCH
    values.setdefault("num_frames_per_block", 3)
    values.setdefault("teacher_inference_steps", 48)
    return values


def to_fastvideo(config, where: object, spell) -> dict:
    """The `method:` block of `config` (the inverse of from_fastvideo): the class for the step index, the
    required keys, then what differs from this schema's defaults (fvjax's own clean_context when set)."""
    block = {"_target_": CAUSAL_TARGETS[0] if config.step_index == BLOCK else TARGETS[0],
             "t_list": list(config.t_list), "teacher_path_cache": config.teacher_path_cache}
    if config.student_sample_steps is not None:
        block["student_sample_steps"] = config.student_sample_steps
    for key, default in (("teacher_inference_steps", 48), ("num_frames_per_block", 3), ("clean_context", False)):
        if getattr(config, key) != default:
            block[key] = getattr(config, key)
    return block

"""Finetuning in FastVideo's current schema (`method: {_target_: ...FineTuneMethod}`, spec
fastvideo_v3_recipes.md §2.5): the method has no keys of its own there (the timestep density is under
training.model); its timestep grid uses the student's own scheduler shift, models.student.flow_shift
(default 3.0), not the pipeline's flow_shift (which only drives validation)."""
from __future__ import annotations

from fvjax.methods.api import FastVideoMethodContext

TARGETS = ("fastvideo.train.methods.fine_tuning.finetune.FineTuneMethod",
           "fastvideo.train.methods.fine_tuning.FineTuneMethod",
           "fastvideo.train.methods.FineTuneMethod")


def from_fastvideo(block: dict, ctx: FastVideoMethodContext) -> dict:
    return {**block, "student_flow_shift": block.get("student_flow_shift", ctx.student_flow_shift)}

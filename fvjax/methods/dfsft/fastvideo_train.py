"""Diffusion-forcing SFT in FastVideo's current schema (`method: {_target_: ...DiffusionForcingSFTMethod,
chunk_size, min/max_timestep_ratio}`): the keys are fvjax's; the table's shift is the student's own scheduler's,
models.student.flow_shift (default 3.0), as the finetune method. TeacherForcingSFTMethod (tfsft) is the same
block with the same keys and defaults."""
from __future__ import annotations

from fvjax.methods.api import FastVideoMethodContext

TARGETS = ("fastvideo.train.methods.fine_tuning.dfsft.DiffusionForcingSFTMethod",
           "fastvideo.train.methods.fine_tuning.DiffusionForcingSFTMethod",
           "fastvideo.train.methods.DiffusionForcingSFTMethod")
TEACHER_FORCING_TARGETS = ("fastvideo.train.methods.fine_tuning.tfsft.TeacherForcingSFTMethod",
                           "fastvideo.train.methods.fine_tuning.TeacherForcingSFTMethod",
                           "fastvideo.train.methods.TeacherForcingSFTMethod")
DEFAULTS = {"chunk_size": 3, "min_timestep_ratio": 0.0, "max_timestep_ratio": 1.0}


def from_fastvideo(block: dict, ctx: FastVideoMethodContext) -> dict:
    values = {**block}
    for key, default in DEFAULTS.items():
        if values.get(key) is None:
            values[key] = default
    values.setdefault("student_flow_shift", ctx.student_flow_shift)
    return values


def to_fastvideo(config, where: object, spell) -> dict:
    """The `method:` block's keys that differ from this schema's defaults (the shift is the student role's, the
    x0 loss training.model.precondition_outputs: the upgrade writes both)."""
    return {key: getattr(config, key) for key, default in DEFAULTS.items() if getattr(config, key) != default}

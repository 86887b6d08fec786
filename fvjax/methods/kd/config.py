"""`KDConfig`: the slice of the recipe knowledge distillation (ODE initialisation) reads (spec
fastvideo_v3_recipes.md §2.4, self_forcing.md §4).

- `t_list`: the student's few-step schedule K + 1 integer timesteps ending in 0; every entry but the last must
  be a timestep of the teacher's trajectory (schedule.py), the last stands for the clean endpoint.
- `teacher_path_cache`: the trajectory cache directory (cache.py); `python -m fvjax.kd_cache` fills it, or
  training does at start when it is incomplete and the recipe has a teacher.
- `teacher_inference_steps` (48) Euler steps of the teacher with the pipeline's flow_shift.
- `step_index`: `block` (FastVideo's KDCausalMethod: one index into t_list[:-1] per sample and block of
  `num_frames_per_block` frames) or `batch` (KDMethod: one index for the whole batch).
- `clean_context` (false): the original's variant (self_forcing.md §4): per-block indices into all of t_list,
  the clean endpoint included as clean context (timestep 0, not in the loss); step_index block only.
- `teacher_guidance_scale`: FastVideo main parses it but its teacher runs conditional-only; fvjax does the
  same and accepts only 1.0 in its own forms (the FastVideo form's value is dropped with a note).
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.schema import fields as F
from fvjax.schema.params import FROM_CONTEXT, METHOD, PIPELINE, REQUIRED, Param, Source
from fvjax.schema.pipeline_config import NUM_TRAIN_TIMESTEPS

BLOCK, BATCH = "block", "batch"


@dataclasses.dataclass(frozen=True)
class KDConfig:
    t_list: tuple[int, ...] = (1000, 937, 833, 625, 0)
    teacher_path_cache: str = ""
    teacher_inference_steps: int = 48
    student_sample_steps: int | None = None       # FastVideo's redundant len(t_list) - 1, checked when given
    teacher_guidance_scale: float = 1.0
    step_index: str = BLOCK
    num_frames_per_block: int = 3
    # The original Self-Forcing / CausVid ODE regression: the index may also pick the clean endpoint (timestep
    # 0), whose frames are clean context for later blocks and left out of the loss. False: FastVideo main.
    clean_context: bool = False
    flow_shift: float = 5.0                       # the teacher ODE's and the student's sigma table (pipeline)
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS

    @property
    def student_steps(self) -> int:
        return len(self.t_list) - 1


def _check_t_list(steps: tuple[int, ...], where: object, key: str) -> None:
    if len(steps) < 2 or steps[-1] != 0:
        fail(where, key, f"is {list(steps)}; it must list the student's timesteps and end in 0 (the clean "
             "endpoint), e.g. [1000, 937, 833, 625, 0]")
    for i, t in enumerate(steps[:-1]):
        if not 0 < t <= NUM_TRAIN_TIMESTEPS:
            fail(where, f"{key}[{i}]", f"is {t}; timesteps must be in 1..{NUM_TRAIN_TIMESTEPS}")
    if any(a <= b for a, b in zip(steps, steps[1:])):
        fail(where, key, f"must be strictly decreasing (noisiest first), got {list(steps)}")


def _check_positive(value: int, where: object, key: str) -> None:
    if value < 1:
        fail(where, key, f"is {value}; must be >= 1")


def _check_guidance(value: float, where: object, key: str) -> None:
    if value != 1.0:
        fail(where, key, f"is {value:g}; the KD teacher runs conditional-only (FastVideo main parses this key but "
             "does not apply it), so only 1.0 is accepted")


KD_PARAMS: tuple[Param, ...] = (
    Param("t_list", (Source(METHOD, "t_list", F.int_list),), REQUIRED, _check_t_list,
          "give the student's schedule ending in 0, e.g. [1000, 937, 833, 625, 0]"),
    Param("teacher_path_cache", (Source(METHOD, "teacher_path_cache", F.read_nonempty_str),), REQUIRED,
          missing_hint="give the directory of the teacher-trajectory cache (made by python -m fvjax.kd_cache "
                       "or at the start of training)"),
    Param("teacher_inference_steps", (Source(METHOD, "teacher_inference_steps", F.read_int),), 48, _check_positive),
    Param("student_sample_steps", (Source(METHOD, "student_sample_steps", F.optional(F.read_int)),), None),
    Param("teacher_guidance_scale", (Source(METHOD, "teacher_guidance_scale", F.read_float),), 1.0, _check_guidance),
    Param("step_index", (Source(METHOD, "step_index", F.choice((BLOCK, BATCH))),), BLOCK),
    Param("num_frames_per_block", (Source(METHOD, "num_frames_per_block", F.read_int),), 3, _check_positive),
    Param("clean_context", (Source(METHOD, "clean_context", F.read_bool),), False),
    Param("flow_shift", (Source(PIPELINE, "flow_shift"),), FROM_CONTEXT, F.check_flow_shift),
)

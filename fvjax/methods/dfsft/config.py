"""`DFSFTConfig`: the slice of the recipe diffusion-forcing SFT reads (FastVideo's DiffusionForcingSFTMethod,
spec fastvideo_v3_recipes.md §2.6).

- `chunk_size` (3): latent frames sharing one noise level; must equal the causal student's
  num_frames_per_block (checked when training starts, as FastVideo does).
- `min_timestep_ratio` / `max_timestep_ratio` (0, 1): the per-chunk index range [int(min N), int(max N)] into
  the student's 1000-entry training table (clamped to the table; an empty range becomes one index wide).
- `pred_type` and the table's shift as the finetune method: velocity (default) or x0 (FastVideo's
  precondition_outputs); the shift is the student's own (models.student.flow_shift in FastVideo's current
  schema, default 3.0), else pipeline_config.flow_shift.
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.methods.finetune.config import VELOCITY, X0
from fvjax.schema import fields as F
from fvjax.schema.params import FROM_CONTEXT, METHOD, PIPELINE, TRAINING, Param, Source
from fvjax.schema.pipeline_config import NUM_TRAIN_TIMESTEPS


@dataclasses.dataclass(frozen=True)
class DFSFTConfig:
    chunk_size: int = 3
    min_timestep_ratio: float = 0.0
    max_timestep_ratio: float = 1.0
    pred_type: str = VELOCITY
    flow_shift: float = 3.0
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS

    def index_range(self) -> tuple[int, int]:
        """[low, high) of the per-chunk table index, as FastVideo computes it."""
        n = self.num_train_timesteps
        low = max(0, min(int(self.min_timestep_ratio * n), n - 1))
        high = max(0, min(int(self.max_timestep_ratio * n), n - 1))
        if high <= low:
            high = min(n - 1, low + 1)
        return low, high + 1


def _chunk_size(value, where: object, key: str) -> int:
    if isinstance(value, float) and not value.is_integer():
        fail(where, key, f"is {value}; must be an integer number of latent frames")
    return F.read_int(value, where, key)


def _check_positive(value: int, where: object, key: str) -> None:
    if value < 1:
        fail(where, key, f"is {value}; must be >= 1")


DFSFT_PARAMS: tuple[Param, ...] = (
    Param("chunk_size", (Source(METHOD, "chunk_size", F.null_means(3, _chunk_size)),), 3, _check_positive),
    Param("min_timestep_ratio", (Source(METHOD, "min_timestep_ratio", F.null_means(0.0, F.read_float)),), 0.0,
          F.check_unit_interval),
    Param("max_timestep_ratio", (Source(METHOD, "max_timestep_ratio", F.null_means(1.0, F.read_float)),), 1.0,
          F.check_unit_interval),
    Param("pred_type", (
        Source(METHOD, "pred_type", F.choice((VELOCITY, X0), aliases={"v": VELOCITY, "flow": VELOCITY})),
        Source(TRAINING, "precondition_outputs", None, lambda b: X0 if b else VELOCITY, lambda p: p == X0),
    )),
    Param("flow_shift", (Source(METHOD, "student_flow_shift", F.read_float), Source(PIPELINE, "flow_shift")),
          FROM_CONTEXT, F.check_flow_shift, first_wins=True),
)

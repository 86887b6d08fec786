"""`CausalCDConfig`: the slice of the recipe causal consistency distillation reads (FastVideo's
CausalConsistencyDistillationMethod, spec fastvideo_v3_recipes.md §2.6: `causal_cd`).

- `guidance_scale` (3.0): the teacher's CFG, standard form v_u + w (v_c - v_u), on its velocity;
- `discrete_cd_N` (48, >= 2): points of the consistency grid on the shifted schedule;
- `ema_decay` (0.99) / `ema_start_step` (200): the ema role, the consistency target (update.py);
- `flow_shift`: the grid's shift, pipeline.flow_shift or 5.0 when unset (FastVideo: `flow_shift or 5.0`);
- `negative_prompt_embedding` / `negative_prompt`: the teacher's unconditional branch, as DMD2's
  (fvjax/methods/dmd2/negative_prompt.py; FastVideo encodes Wan's default negative prompt).
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.methods.dmd2.config import _check_guidance
from fvjax.schema import fields as F
from fvjax.schema.params import METHOD, PIPELINE, Param, Source
from fvjax.schema.pipeline_config import NUM_TRAIN_TIMESTEPS

DEFAULT_SHIFT = 5.0   # FastVideo's causal_cd: pipeline.flow_shift or 5.0


@dataclasses.dataclass(frozen=True)
class CausalCDConfig:
    guidance_scale: float = 3.0
    discrete_cd_N: int = 48
    ema_decay: float = 0.99
    ema_start_step: int = 200
    flow_shift: float = DEFAULT_SHIFT
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    negative_prompt_embedding: str = ""
    negative_prompt: str | None = None


def _check_n(value: int, where: object, key: str) -> None:
    if value < 2:
        fail(where, key, f"is {value}; the consistency grid needs discrete_cd_N >= 2 points (FastVideo: 48)")


def _check_decay(value: float, where: object, key: str) -> None:
    # 0 would make the target the student itself, 1 a frozen copy of its start: neither is an EMA.
    if not 0 < value < 1:
        fail(where, key, f"is {value:g}; the ema role's decay must be in (0, 1) (FastVideo: 0.99)")


def _check_start(value: int, where: object, key: str) -> None:
    if value < 0:
        fail(where, key, f"is {value}; must be >= 0 (the first step at which the ema role moves)")


CAUSAL_CD_PARAMS: tuple[Param, ...] = (
    Param("guidance_scale", (Source(METHOD, "guidance_scale", F.read_float),), 3.0, _check_guidance),
    Param("discrete_cd_N", (Source(METHOD, "discrete_cd_N", F.read_int),), 48, _check_n),
    Param("ema_decay", (Source(METHOD, "ema_decay", F.read_float),), 0.99, _check_decay),
    Param("ema_start_step", (Source(METHOD, "ema_start_step", F.read_int),), 200, _check_start),
    Param("flow_shift", (Source(PIPELINE, "flow_shift"),), DEFAULT_SHIFT, F.check_flow_shift),
    Param("negative_prompt_embedding", (Source(METHOD, "negative_prompt_embedding", F.read_nonempty_str),), ""),
    Param("negative_prompt", (Source(METHOD, "negative_prompt", F.optional(F.read_str)),), None),
)

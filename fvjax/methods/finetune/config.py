"""`FinetuneConfig`: the slice of the recipe the flow-matching finetune method reads.

`pred_type: x0` is FastVideo's `precondition_outputs: true` (the loss compares x0 = x_t - sigma v with
the data); `velocity` compares v with eps - x0 (FastVideo's default). The timestep density fields are
`training:` fields in FastVideo and may be given in either place.
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.schema import fields as F
from fvjax.schema.params import FROM_CONTEXT, METHOD, PIPELINE, TRAINING, Param, Source
from fvjax.schema.training_args import TRAINING_FIELDS
from fvjax.schema.pipeline_config import NUM_TRAIN_TIMESTEPS

VELOCITY, X0 = "velocity", "x0"


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    pred_type: str = VELOCITY
    weighting_scheme: str = ""        # only logit_normal and mode change the density; others are uniform
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 0.0
    flow_shift: float = 3.0
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS


def _check_attn(value: str, where: object, key: str) -> None:
    if value == "vsa":
        fail(where, key, "video sparse attention (vsa) is not supported by fvjax yet; use dense")


FINETUNE_PARAMS: tuple[Param, ...] = (
    Param("pred_type", (
        Source(METHOD, "pred_type", F.choice((VELOCITY, X0), aliases={"v": VELOCITY, "flow": VELOCITY})),
        Source(TRAINING, "precondition_outputs", None, lambda b: X0 if b else VELOCITY, lambda p: p == X0),
    )),
    # FastVideo's design-branch keys: checked (only what fvjax does is accepted), nothing to configure.
    Param("loss", (Source(METHOD, "loss", F.choice(("flow_matching",))),), "flow_matching", stored=False),
    Param("attn_kind", (Source(METHOD, "attn_kind", F.choice(("dense", "vsa"))),), "dense", _check_attn,
          stored=False),
    Param("weighting_scheme", (
        Source(METHOD, "weighting_scheme", TRAINING_FIELDS["weighting_scheme"].metadata["read"]),
        Source(TRAINING, "weighting_scheme"),
    )),
    Param("logit_mean", (Source(METHOD, "logit_mean", F.read_float), Source(TRAINING, "logit_mean"))),
    Param("logit_std", (Source(METHOD, "logit_std", F.read_float), Source(TRAINING, "logit_std"))),
    Param("mode_scale", (Source(METHOD, "mode_scale", F.read_float), Source(TRAINING, "mode_scale"))),
    # The timestep grid's shift: the student's own (FastVideo's current schema: models.student.flow_shift,
    # a knob apart from the pipeline's validation shift), else pipeline_config.flow_shift.
    Param("flow_shift", (Source(METHOD, "student_flow_shift", F.read_float), Source(PIPELINE, "flow_shift")),
          FROM_CONTEXT, F.check_flow_shift, first_wins=True),
)

"""Causal consistency distillation in FastVideo's current schema (`method: {_target_:
...CausalConsistencyDistillationMethod, guidance_scale, discrete_cd_N, ema_decay, ema_start_step}`): the keys
are fvjax's; the grid's shift is pipeline.flow_shift (5.0 when unset), not the student role's scheduler."""
from __future__ import annotations

from fvjax.methods.api import FastVideoMethodContext

TARGETS = ("fastvideo.train.methods.consistency_model.causal_cd.CausalConsistencyDistillationMethod",
           "fastvideo.train.methods.consistency_model.CausalConsistencyDistillationMethod",
           "fastvideo.train.methods.CausalConsistencyDistillationMethod")
DEFAULTS = {"guidance_scale": 3.0, "discrete_cd_N": 48, "ema_decay": 0.99, "ema_start_step": 200}
FVJAX_KEYS = {"negative_prompt_embedding": "", "negative_prompt": None}   # the teacher's unconditional branch


def from_fastvideo(block: dict, ctx: FastVideoMethodContext) -> dict:
    values = {**block}
    for key, default in DEFAULTS.items():
        if values.get(key) is None:
            values[key] = default
    return values


def to_fastvideo(config, where: object, spell) -> dict:
    """The `method:` block's keys that differ from this schema's defaults (the shift is pipeline.flow_shift,
    which the upgrade writes)."""
    keys = {**DEFAULTS, **FVJAX_KEYS}
    return {key: getattr(config, key) for key, default in keys.items() if getattr(config, key) != default}

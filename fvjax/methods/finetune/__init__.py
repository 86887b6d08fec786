"""Flow-matching finetuning (FastVideo's finetune method): config.py (its slice of the recipe), update.py
(the pure update), and its registry entry below."""
from __future__ import annotations

from typing import Any

from fvjax.errors import fail
from fvjax.methods.api import CheckContext, MethodSpec, RoleRequirement
from fvjax.methods.finetune import fastvideo_train
from fvjax.methods.finetune.config import FINETUNE_PARAMS, FinetuneConfig
from fvjax.schema.training_args import ExecutionMode, TrainingArgs


def _check(config: FinetuneConfig, training: TrainingArgs, ctx: CheckContext) -> dict[str, Any]:
    if not training.learning_rate > 0:
        fail(ctx.where, "training.learning_rate", f"is {training.learning_rate}; finetuning needs "
             "learning_rate > 0")
    return {}


METHOD = MethodSpec(
    name="finetune",
    mode=ExecutionMode.FINETUNING,
    update="fvjax.methods.finetune.update:make_update",
    roles=(RoleRequirement("student", True, "finetuning trains the student"),),
    config_cls=FinetuneConfig,
    params=FINETUNE_PARAMS,
    check=_check,
    step_flops=lambda config, forward, batch: 3 * forward["student"] * batch,   # forward + backward (2x)
    fastvideo_targets=fastvideo_train.TARGETS,
    from_fastvideo=fastvideo_train.from_fastvideo,
)

"""`PipelineConfig`: the model-side settings of `pipeline_config:` (inline) or `pipeline_config_path:`.

Field names are FastVideo's `PipelineConfig` names. fvjax reads `flow_shift`, `dmd_denoising_steps`,
`sampler_kind`, `dit_precision` and `vae_precision`; the other FastVideo fields are accepted so a dumped
FastVideo pipeline config loads, and are ignored (nested `dit_config`/`vae_config`/encoder configs
included: fvjax reads model architecture from each role's weights, never from the pipeline config).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fvjax.schema import fields as F
from fvjax.schema.training_args import IGNORED, PRECISIONS, USED

# FlowMatchEulerDiscreteScheduler's training steps (every Wan pipeline's scheduler config).
NUM_TRAIN_TIMESTEPS = 1000


def _f(default: Any, read: F.Reader, doc: str, status: str = USED):
    return dataclasses.field(default=default, metadata={"read": read, "doc": doc, "status": status})


def _opaque(value: Any, where: object, key: str) -> None:
    return None  # accepted for FastVideo compatibility, never read


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    flow_shift: float | None = _f(None, F.optional(F.read_float),
                                  "flow-matching shift; null -> the family's default for the base model")
    dmd_denoising_steps: tuple[int, ...] | None = _f(None, F.optional(F.int_list),
                                                     "DMD few-step schedule (Phase-2 place)")
    sampler_kind: str = _f("ode", F.choice(("ode", "sde")),
                           "validation sampler: ode (UniPC, WanPipeline's scheduler) or sde (DMD's few-step chain)")
    dit_precision: str | None = _f(None, F.optional(F.choice(PRECISIONS)),
                                   "FastVideo's pipeline-side DiT precision; must agree with training")
    vae_precision: str = _f("fp32", F.choice(PRECISIONS), "VAE dtype")
    embedded_cfg_scale: float = _f(6.0, F.read_float, "guidance-distilled models only", IGNORED)
    flow_shift_sr: float | None = _f(None, F.optional(F.read_float), "super-resolution stage", IGNORED)
    disable_autocast: bool = _f(False, F.read_bool, "no autocast under JAX", IGNORED)
    scheduler_step_in_fp32: bool = _f(False, F.read_bool, "fvjax steps schedulers in fp32", IGNORED)
    is_causal: bool = _f(False, F.read_bool, "causal (self-forcing) models: later", IGNORED)
    vae_tiling: bool = _f(True, F.read_bool, "inference memory option", IGNORED)
    vae_sp: bool = _f(True, F.read_bool, "inference memory option", IGNORED)
    image_encoder_precision: str = _f("fp32", F.choice(PRECISIONS), "I2V only", IGNORED)
    text_encoder_precisions: tuple[str, ...] = _f(("fp32",), F.str_list, "text-encoder dtype", IGNORED)
    ti2v_task: bool = _f(False, F.read_bool, "Wan2.2 TI2V", IGNORED)
    boundary_ratio: float | None = _f(None, F.optional(F.read_float), "Wan2.2 MoE", IGNORED)
    model_path: str = _f("", F.read_str, "see training.model_path", IGNORED)
    pipeline_config_path: str | None = _f(None, F.optional(F.read_str), "self-reference in dumps", IGNORED)
    dit_config: None = _f(None, _opaque, "architecture comes from the weights' config.json", IGNORED)
    vae_config: None = _f(None, _opaque, "architecture comes from the weights' config.json", IGNORED)
    upsampler_config: None = _f(None, _opaque, "not used", IGNORED)
    upsampler_precision: str = _f("fp32", F.read_str, "not used", IGNORED)
    image_encoder_config: None = _f(None, _opaque, "I2V only", IGNORED)
    text_encoder_configs: None = _f(None, _opaque, "architecture comes from the weights' config.json",
                                    IGNORED)

    def replace(self, **changes: Any) -> "PipelineConfig":
        return dataclasses.replace(self, **changes)


PIPELINE_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(PipelineConfig)}


def read_pipeline_values(raw: dict[str, Any], where: object, prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in PIPELINE_FIELDS:
            F.unknown_key(where, key, name, PIPELINE_FIELDS)
        values[name] = PIPELINE_FIELDS[name].metadata["read"](value, where, key)
    return values

"""`PipelineConfig`: the model-side settings of `pipeline_config:` (inline) or `pipeline_config_path:`.

Field names are FastVideo's `PipelineConfig` names. fvjax reads `flow_shift`, `dmd_denoising_steps`,
`sampler_kind`, `dit_precision` and `vae_precision`; the other FastVideo fields are accepted so a dumped
FastVideo pipeline config loads, and are ignored (nested `dit_config`/`vae_config`/encoder configs
included: fvjax reads model architecture from each role's weights, never from the pipeline config).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fvjax.errors import fail
from fvjax.schema import fields as F
from fvjax.schema.training_args import IGNORED, PRECISIONS, UNSUPPORTED, USED

# FlowMatchEulerDiscreteScheduler's training steps (every Wan pipeline's scheduler config).
NUM_TRAIN_TIMESTEPS = 1000


def _f(default: Any, read: F.Reader, doc: str, status: str = USED):
    return dataclasses.field(default=default, metadata={"read": read, "doc": doc, "status": status})


def _opaque(value: Any, where: object, key: str) -> None:
    return None  # accepted for FastVideo compatibility, never read


# FastVideo's DiTConfig fields a pipeline config may set. The training-only arch overrides
# (local_attn_size, sink_size) and quantisation change what is trained: accepted at their defaults only.
_DIT_CONFIG_DEFAULTS = {"prefix": None, "quant_config": None, "local_attn_size": -1, "sink_size": 0}
_DIT_CONFIG_WHY = {"quant_config": "quantisation-aware training (QAT) is not implemented in fvjax",
                   "local_attn_size": "local (causal) attention belongs to the causal Wan student (WanCausalModel / "
                                      "family wan_causal; give it models.<role>.arch.local_attn_size), and this "
                                      "recipe has none",
                   "sink_size": "attention sinks belong to the causal Wan student (WanCausalModel / family "
                                "wan_causal; give it models.<role>.arch.sink_size), and this recipe has none"}


def _dit_config(value: Any, where: object, key: str) -> None:
    """FastVideo raises on an unknown dit_config key (AnyFlow's r_embedder*); so does fvjax, and a value
    that would change the trained model is refused rather than dropped."""
    if value is None:
        return None
    for name, given in F.mapping(value, where, key).items():
        sub = f"{key}.{name}"
        if name == "arch_config":
            fail(where, sub, "architecture comes from each role's weights (config.json) in fvjax; remove it")
        if name not in _DIT_CONFIG_DEFAULTS:
            F.unknown_key(where, sub, name, _DIT_CONFIG_DEFAULTS)
        if name != "prefix" and given != _DIT_CONFIG_DEFAULTS[name]:
            fail(where, sub, f"is {given!r}: {_DIT_CONFIG_WHY[name]}; remove it")
    return None


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
    is_causal: bool = _f(False, F.read_bool, "a causal pipeline needs a causal student (WanCausalModel, family "
                         "wan_causal), and this recipe has none", UNSUPPORTED)
    vae_tiling: bool = _f(True, F.read_bool, "inference memory option", IGNORED)
    vae_sp: bool = _f(True, F.read_bool, "inference memory option", IGNORED)
    image_encoder_precision: str = _f("fp32", F.choice(PRECISIONS), "I2V only", IGNORED)
    text_encoder_precisions: tuple[str, ...] = _f(("fp32",), F.str_list, "text-encoder dtype", IGNORED)
    ti2v_task: bool = _f(False, F.read_bool, "Wan2.2 text-image-to-video is not implemented in fvjax",
                         UNSUPPORTED)
    expand_timesteps: bool = _f(False, F.read_bool, "Wan2.2 TI2V per-token timesteps are not implemented in "
                                "fvjax", UNSUPPORTED)
    boundary_ratio: float | None = _f(None, F.optional(F.read_float), "the Wan2.2 two-expert (MoE) model is not "
                                      "implemented in fvjax", UNSUPPORTED)
    lucy_edit_task: bool = _f(False, F.read_bool, "video editing (Lucy-Edit) is not implemented in fvjax",
                              UNSUPPORTED)
    warp_denoising_step: bool = _f(False, F.read_bool, "pipeline attribute; training reads the method's "
                                   "warp_denoising_step", IGNORED)
    # FastVideoArgs fields FastVideo's shipped pipeline JSON files carry (wan_1.3B_t2v_pipeline.json).
    precision: str = _f("bf16", F.choice(PRECISIONS), "see training.dit_precision and mixed_precision", IGNORED)
    vae_decode_precision: str | None = _f(None, F.optional(F.choice(PRECISIONS)), "fvjax decodes at "
                                          "vae_precision", IGNORED)
    dit_cpu_offload: bool = _f(False, F.read_bool, "no CPU offload under JAX (parameters are sharded)", IGNORED)
    enable_torch_compile: bool = _f(False, F.read_bool, "XLA always compiles", IGNORED)
    STA_mode: str | None = _f(None, F.optional(F.read_str), "sliding-tile attention (PyTorch kernel)", IGNORED)
    model_path: str = _f("", F.read_str, "see training.model_path", IGNORED)
    pipeline_config_path: str | None = _f(None, F.optional(F.read_str), "self-reference in dumps", IGNORED)
    dit_config: None = _f(None, _dit_config, "architecture comes from the weights' config.json", IGNORED)
    vae_config: None = _f(None, _opaque, "architecture comes from the weights' config.json", IGNORED)
    upsampler_config: None = _f(None, _opaque, "not used", IGNORED)
    upsampler_precision: str = _f("fp32", F.read_str, "not used", IGNORED)
    image_encoder_config: None = _f(None, _opaque, "I2V only", IGNORED)
    image_encoder_configs: None = _f(None, _opaque, "I2V only", IGNORED)
    image_encoder_precisions: tuple[str, ...] | None = _f(None, F.optional(F.str_list), "I2V only", IGNORED)
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
        field = PIPELINE_FIELDS[name]
        parsed = field.metadata["read"](value, where, key)
        if field.metadata["status"] == UNSUPPORTED and parsed != field.default:
            fail(where, key, f"is {value!r}: {field.metadata['doc']}; remove it or set it to {field.default!r}")
        values[name] = parsed
    return values

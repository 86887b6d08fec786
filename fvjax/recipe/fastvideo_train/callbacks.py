"""`callbacks:` of FastVideo's current schema (spec fastvideo_v3_recipes.md §3.1-3.4) -> fvjax's training
fields. No `grad_clip` block means no clipping; no `ema` block, no EMA; no `validation` block, no
validation. Keys FastVideo would forward to its inference pipeline (and so typos) are errors here.
"""
from __future__ import annotations

from fvjax.errors import fail
from fvjax.recipe.fastvideo_train.targets import callback_kind
from fvjax.schema import fields as F

GRAD_CLIP_KEYS = ("_target_", "max_grad_norm", "log_grad_norms")
EMA_KEYS = ("_target_", "decay", "start_iter", "validate")   # validate: an fvjax addition
VALIDATION_KEYS = ("_target_", "pipeline_target", "dataset_file", "every_steps", "run_at_start", "sampling_steps",
                   "guidance_scale", "num_frames", "num_videos_per_prompt", "use_validation_media_conditioning",
                   "output_dir", "sampling_timesteps", "overlay_actions", "keyboard_value_scale",
                   "offload_training_state", "unload_pipeline_after_validation", "attn_qat_infer", "metrics")
# The validation pipelines: multi-step ODE sampling or DMD's few-step SDE chain.
PIPELINES = {
    "fastvideo.pipelines.basic.wan.wan_pipeline.WanPipeline": "ode",
    "fastvideo.pipelines.basic.wan.WanPipeline": "ode",
    "fastvideo.pipelines.WanPipeline": "ode",
    "fastvideo.pipelines.basic.wan.wan_dmd_pipeline.WanDMDPipeline": "sde",
    "fastvideo.pipelines.basic.wan.WanDMDPipeline": "sde",
    "fastvideo.pipelines.WanDMDPipeline": "sde",
    # Self-Forcing's: the causal student's streaming few-step chain (the method's validation sampler).
    "fastvideo.pipelines.basic.wan.wan_causal_dmd_pipeline.WanCausalDMDPipeline": "sde",
    "fastvideo.pipelines.basic.wan.WanCausalDMDPipeline": "sde",
    "fastvideo.pipelines.WanCausalDMDPipeline": "sde",
}
_PIPELINES_NOT_YET = ("WanCausalPipeline", "TurboDiffusionPipeline")
_IGNORED = {
    "use_validation_media_conditioning": "text-to-video validation has no media conditioning",
    "overlay_actions": "world-model validation only", "keyboard_value_scale": "world-model validation only",
    "offload_training_state": "validation reuses the sharded training state under JAX",
    "unload_pipeline_after_validation": "the validation components stay loaded (JAX arrays)",
    "attn_qat_infer": "no quantised attention in fvjax",
}


class CallbackTranslation:
    def __init__(self):
        self.values: dict = {}                       # TrainingArgs field -> value
        self.written: dict[str, str] = {}            # field -> key as written
        self.defaults: dict[str, str] = {}           # field -> why it has a default value
        self.ignored: list[tuple[str, str]] = []
        self.sampler_kind: str | None = None         # from validation.pipeline_target
        self.sampling_timesteps = None               # (validation.sampling_timesteps, key), as written
        self.validation_output_dir = None            # (validation.output_dir, key), as written

    def set(self, field: str, value, key: str | None, why_default: str | None = None) -> None:
        self.values[field] = value
        if key:
            self.written[field] = key
        else:
            self.defaults[field] = why_default or "FastVideo's current-schema default"


def _keys(spec: dict, valid: tuple[str, ...], where: object, key: str) -> None:
    for name in spec:
        if name not in valid:
            F.unknown_key(where, f"{key}.{name}", name, valid)


def _grad_clip(spec: dict, out: CallbackTranslation, where: object, key: str) -> None:
    _keys(spec, GRAD_CLIP_KEYS, where, key)
    given = spec.get("max_grad_norm")
    out.set("max_grad_norm", 1.0 if given is None else given, f"{key}.max_grad_norm" if given is not None else None)
    if spec.get("log_grad_norms") is not None and not F.read_bool(spec["log_grad_norms"], where,
                                                                 f"{key}.log_grad_norms"):
        out.ignored.append((f"{key}.log_grad_norms", "fvjax always logs <role>/grad_norm"))


def _ema(spec: dict, out: CallbackTranslation, where: object, key: str) -> None:
    _keys(spec, EMA_KEYS, where, key)
    for name, field, default in (("decay", "ema_decay", 0.9999), ("start_iter", "ema_start_step", 0)):
        given = spec.get(name)
        out.set(field, default if given is None else given, f"{key}.{name}" if given is not None else None)
    if spec.get("validate") is not None:   # fvjax: false renders validation with the raw weights (legacy use_ema)
        out.set("use_ema", F.read_bool(spec["validate"], where, f"{key}.validate"), f"{key}.validate")
    else:
        out.set("use_ema", True, None, "validation renders with the EMA weights when the ema callback is present")


def _validation(spec: dict, out: CallbackTranslation, where: object, key: str, num_latent_t,
                temporal_compression: int) -> None:
    _keys(spec, VALIDATION_KEYS, where, key)
    for required in ("pipeline_target", "dataset_file"):
        if spec.get(required) is None:
            fail(where, f"{key}.{required}", "missing; FastVideo's ValidationCallback requires it")
    target = F.read_str(spec["pipeline_target"], where, f"{key}.pipeline_target").strip()
    if target.rsplit(".", 1)[-1] in _PIPELINES_NOT_YET:
        fail(where, f"{key}.pipeline_target", f"{target} is not implemented in fvjax; use "
             f"{next(iter(PIPELINES))} or the WanDMDPipeline")
    if target not in PIPELINES:
        fail(where, f"{key}.pipeline_target", f"unknown validation pipeline {target!r}; fvjax has "
             f"{', '.join(sorted(set(PIPELINES)))}")
    out.sampler_kind = PIPELINES[target]
    every = spec.get("every_steps")
    every = 100 if every is None else F.read_int(every, where, f"{key}.every_steps")
    if every <= 0:   # FastVideo: <= 0 disables the callback
        out.set("log_validation", False, f"{key}.every_steps")
        return
    out.set("log_validation", True, key)
    out.set("validation_dataset_file", spec["dataset_file"], f"{key}.dataset_file")
    out.set("validation_steps", every, f"{key}.every_steps" if spec.get("every_steps") is not None else None)
    run_at_start = spec.get("run_at_start")
    if run_at_start is not None:
        if isinstance(run_at_start, str):   # FastVideo: the strings 1/true/yes/on are true
            run_at_start = run_at_start.strip().lower() in ("1", "true", "yes", "on")
        out.set("validation_at_start", F.read_bool(run_at_start, where, f"{key}.run_at_start"),
                f"{key}.run_at_start")
    steps = spec.get("sampling_steps")
    if steps:
        out.set("validation_sampling_steps", steps, f"{key}.sampling_steps")
    elif out.sampler_kind == "ode":
        out.set("validation_sampling_steps", [40], None)
    if spec.get("guidance_scale") is not None:
        out.set("validation_guidance_scale", [spec["guidance_scale"]], f"{key}.guidance_scale")
    if spec.get("num_frames") is not None:
        frames = F.read_int(spec["num_frames"], where, f"{key}.num_frames")
        expected = (num_latent_t - 1) * temporal_compression + 1 if isinstance(num_latent_t, int) else None
        if frames != expected:
            fail(where, f"{key}.num_frames", f"is {frames}; fvjax validates at the training length "
                 f"((num_latent_t - 1) * {temporal_compression} + 1 = {expected}); remove it")
    if spec.get("num_videos_per_prompt") is not None and F.read_int(
            spec["num_videos_per_prompt"], where, f"{key}.num_videos_per_prompt") != 1:
        fail(where, f"{key}.num_videos_per_prompt", "fvjax renders one video per prompt; repeat prompts in the "
             "file instead")
    if spec.get("output_dir") is not None:
        out.validation_output_dir = (spec["output_dir"], f"{key}.output_dir")
    if spec.get("metrics") not in (None, False):
        fail(where, f"{key}.metrics", "VBench validation metrics are not implemented in fvjax; remove it")
    if spec.get("sampling_timesteps") is not None:
        out.sampling_timesteps = (spec["sampling_timesteps"], f"{key}.sampling_timesteps")
    for name, why in _IGNORED.items():
        if spec.get(name) is not None:
            out.ignored.append((f"{key}.{name}", why))


def read_callbacks(raw, where: object, num_latent_t, temporal_compression: int) -> CallbackTranslation:
    out = CallbackTranslation()
    section = F.mapping(raw if raw is not None else {}, where, "callbacks")
    seen: dict[str, str] = {}
    for name, spec in section.items():
        key = f"callbacks.{name}"
        spec = F.mapping(spec if spec is not None else {}, where, key)
        kind = callback_kind(name, spec, where, key)
        if kind in seen:
            fail(where, key, f"a second {kind} callback (the first is {seen[kind]}); fvjax runs one of each")
        seen[kind] = key
        if kind == "grad_clip":
            _grad_clip(spec, out, where, key)
        elif kind == "ema":
            _ema(spec, out, where, key)
        else:
            _validation(spec, out, where, key, num_latent_t, temporal_compression)
    return out

"""Validation videos during training (fastvideo_distillation.md §8).

With `training.log_validation`, before the first step and then every `validation_steps` steps, the live
student renders the prompts of `validation_dataset_file` and the videos go to
`<output_dir>/validation_step_{step}_inference_steps_{n}_video_{i}.mp4` and to the trackers (TensorBoard:
animated images; W&B: videos, key `validation_videos_{n}_steps`).

- Sampler: the method's `validation_samplers` hook (DMD2 students: the DMD few-step chain over
  `dmd_denoising_steps`, conditional only; `validation_sampling_steps`, if set, must equal its length,
  checked when the recipe loads; Self-Forcing students: the causal streaming sampler, a spec with its own
  `render`). Otherwise (`ode_validation`)
  `pipeline_config.sampler_kind: ode` (UniPC, WanPipeline's default) with each of
  `validation_sampling_steps` (default 50) and CFG `validation_guidance_scale` (default 5.0) against
  the family's default negative prompt (Wan2.1: FastVideo's).
- Size: num_height x num_width, (num_latent_t - 1) * 4 + 1 frames (Wan's VAE: 4 frames per latent frame);
  noise from the training seed.
- The VAE and the text encoder come from the Diffusers pipeline at `training.model_path`
  (else `pretrained_model_name_or_path`, else the student's path when that is a pipeline).
Every process takes part in sampling (the student's parameters are sharded); process 0 writes.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import jax

from fvjax.data.prompt_files import read_prompts
from fvjax.errors import fail
from fvjax.families.registry import get_family
from fvjax.inference.sampling import SamplerSpec
from fvjax.methods.api import ValidationContext
from fvjax.methods.registry import get_method

DEFAULT_ODE_STEPS = 50
DEFAULT_GUIDANCE = 5.0
FPS = 16


NO_PIPELINE = ("validation needs a Diffusers Wan pipeline for its VAE and text encoder: set training.model_path "
               "to a pipeline directory (vae/, text_encoder/, tokenizer/) or hub id, or set log_validation: false")


def find_pipeline(recipe) -> str | None:
    """Where validation's VAE and text encoder come from: training.model_path, else
    pretrained_model_name_or_path, else the sampled role's path, whichever first is a pipeline of the
    recipe's family (a hub id counts: the loaders look it up in the local cache and say so when absent)."""
    from fvjax.weights import paths

    t = recipe.training
    family = get_family(recipe.family)
    candidates = [t.model_path, t.pretrained_model_name_or_path,
                  recipe.roles[get_method(recipe.method).sampled_role].path]
    for candidate in filter(None, candidates):
        root = Path(candidate).expanduser()
        if not os.path.exists(root):   # (os.path: False for a name too long or with a NUL byte)
            if paths.looks_like_hub_id(candidate):
                return candidate
            continue
        if family.is_pipeline(root):
            return str(root)
    return None


def ode_validation(ctx: ValidationContext) -> list[SamplerSpec]:
    """The default validation sampler: UniPC (WanPipeline's) with CFG, once per validation_sampling_steps."""
    if ctx.sampler_kind != "ode":
        fail(ctx.where, "pipeline_config.sampler_kind", f"{ctx.sampler_kind!r}: validation of this method samples "
             "with the ode sampler (UniPC); set sampler_kind: ode")
    guidance = ctx.guidance_scales[0] if ctx.guidance_scales else DEFAULT_GUIDANCE
    return [SamplerSpec(kind="unipc", num_steps=n, guidance_scale=guidance, shift=ctx.flow_shift)
            for n in (ctx.sampling_steps or (DEFAULT_ODE_STEPS,))]


def sampler_specs(recipe) -> list[SamplerSpec]:
    """How validation renders: the method's `validation_samplers` hook, else `ode_validation`."""
    t = recipe.training
    method = get_method(recipe.method)
    # The pipeline's shift (FastVideo's current schema keeps the student's training shift apart from it).
    shift = recipe.pipeline.flow_shift or getattr(recipe.method_config, "flow_shift", None) \
        or get_family(recipe.family).default_flow_shift(t.model_path)
    ctx = ValidationContext(sampling_steps=t.validation_sampling_steps, guidance_scales=t.validation_guidance_scale,
                            sampler_kind=recipe.pipeline.sampler_kind, flow_shift=shift, where=recipe.source)
    if method.validation_samplers is not None:
        return method.validation_samplers(recipe.method_config, ctx)
    return ode_validation(ctx)


@dataclasses.dataclass
class Validator:
    prompts: list[str]
    specs: list[SamplerSpec]
    embeds: Any                # fvjax.inference.text_to_video.PromptEmbeddings: encoded once, the text encoder is then freed
    decoder: Any               # fvjax.inference.text_to_video.VideoDecoder
    request: Any               # fvjax.inference.text_to_video.VideoRequest
    every: int
    output_dir: str

    @classmethod
    def from_recipe(cls, recipe) -> "Validator | None":
        t = recipe.training
        if not t.log_validation:
            return None
        if not t.validation_dataset_file:
            fail(recipe.source, "training.validation_dataset_file", "log_validation is on but no prompts file is "
                 "given (FastVideo's JSON {\"data\": [{\"caption\": ...}]}, a .csv/.parquet/.arrow with a "
                 "caption column, or a .txt, one prompt per line)")
        if t.validation_steps <= 0:
            fail(recipe.source, "training.validation_steps", "log_validation is on: set how often to validate "
                 "(a positive number of steps)")
        prompts = read_prompts(t.validation_dataset_file, recipe.source)
        specs = sampler_specs(recipe)
        from fvjax.inference.text_to_video import Components, VideoRequest, encode_prompts

        family = get_family(recipe.family)
        pipeline = find_pipeline(recipe) or fail(recipe.source, "training.log_validation", NO_PIPELINE)
        components = Components.load(pipeline, family, where=recipe.source)
        # The prompts never change: encoded once here, so the text encoder (UMT5-XXL: 5.7 B parameters)
        # is not kept beside the training state.
        negative = family.defaults.negative_prompt if any(spec.uses_guidance for spec in specs) else None
        embeds = encode_prompts(components.prompt_encoder, prompts, negative)
        frames = (t.num_latent_t - 1) * family.defaults.temporal_compression + 1
        return cls(prompts, specs, embeds, components.decoder,
                   VideoRequest(frames, t.num_height, t.num_width, t.seed), int(t.validation_steps), t.output_dir)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def run(self, step: int, model, params, logger) -> list[str]:
        """Render every prompt with each sampler; returns the written paths (process 0)."""
        from fvjax.inference.text_to_video import render_videos
        from fvjax.io.video import write_mp4

        written = []
        for spec in self.specs:
            n = spec.step_count
            if hasattr(spec, "render"):   # a method's own sampler (Self-Forcing: the causal streaming one)
                videos = spec.render(model, params, self.decoder, self.embeds, self.request)
            else:
                videos = render_videos(model.apply, params, model.config.in_channels, self.decoder, self.embeds,
                                       spec, self.request)
            if jax.process_index() != 0:
                continue
            for i, frames in enumerate(videos):
                path = os.path.join(self.output_dir, f"validation_step_{step}_inference_steps_{n}_video_{i}.mp4")
                write_mp4(frames, path, fps=FPS)
                written.append(path)
            logger.log_videos(step, f"validation_videos_{n}_steps", videos, self.prompts, FPS,
                              written[-len(videos):])
        if written:
            print(f"fvjax: validation at step {step}: {len(written)} video(s) in {self.output_dir}", file=sys.stderr)
        return written

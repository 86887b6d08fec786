"""Validation videos of a Self-Forcing student: rendered the way it is used, with the causal streaming
sampler (fvjax/inference/streaming.py: chunk by chunk against the KV cache, the few-step chain of the
training rollout's schedule, every chunk to the last step, then its context pass), conditional only.
The training loop's Validator calls `render` of such a spec instead of its whole-video samplers."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class StreamingValidation:
    """A validation sampler spec (like fvjax.inference.sampling.SamplerSpec) for causal students."""
    denoising_steps: tuple[float, ...]     # model timesteps, noisiest first (warped if training warps)
    shift: float
    context_noise: float = 0.0
    sample_type: str = "sde"
    kind: str = "stream"

    uses_guidance = False                  # FastVideo's causal DMD pipeline: conditional only

    @property
    def step_count(self) -> int:
        return len(self.denoising_steps)

    def render(self, model, params, decoder, embeds, request) -> np.ndarray:
        """uint8 frames [B, F, H, W, 3] of the prompts' videos; one noise draw per prompt from request.seed."""
        from fvjax.inference.sampling import initial_noise, latent_shape
        from fvjax.inference.streaming import StreamSpec, stream_video_latents

        spec = StreamSpec(denoising_steps=self.denoising_steps, shift=self.shift, context_noise=self.context_noise,
                          sample_type=self.sample_type)
        shape = latent_shape(request.num_frames, request.height, request.width, model.config.in_channels,
                             *decoder.compression)
        noise = initial_noise(request.seed, embeds.context.shape[0], shape)
        key = jax.random.fold_in(jax.random.key(request.seed), 1)   # the re-noising, apart from the initial noise
        latents = stream_video_latents(model.graphdef, params, model.config, embeds.context, noise, spec, key=key)
        return decoder(latents)


def streaming_validation(config, ctx) -> list[StreamingValidation]:
    """Self-Forcing's `validation_samplers` hook: the rollout's schedule, streamed."""
    from fvjax.methods.self_forcing.update import rollout_steps

    return [StreamingValidation(denoising_steps=tuple(float(t) for t in rollout_steps(config)),
                                shift=config.flow_shift, context_noise=config.context_noise,
                                sample_type=config.student_sample_type)]

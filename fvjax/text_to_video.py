"""Prompts -> MP4-ready frames: UMT5 prompt embeddings, the sampling loop on any DiT call, the VAE decode.

Shared by `python -m fvjax.generate` (a loaded transformer) and validation during training (the live
student's params). The VAE and the text encoder come from a Diffusers pipeline directory (vae/,
text_encoder/, tokenizer/) or a hub id in the local HF cache.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.pipeline import ModelFn, SamplerSpec, denoise, initial_noise, latent_shape
from fvjax.video_io import video_to_uint8


class VideoDecoder:
    """A jitted VAE decode of the DiT's (normalised) latents into [-1, 1] videos [B, 3, F, H, W]."""

    def __init__(self, vae):
        from flax import nnx

        from fvjax.families.wan.vae.latents import denormalize_latents

        self.config = vae.config
        graphdef, self._state = nnx.split(vae)
        self._decode = jax.jit(lambda state, z: nnx.merge(graphdef, state).decode(
            denormalize_latents(z, self.config)))

    def __call__(self, latents: jax.Array) -> np.ndarray:
        """uint8 frames [B, F, H, W, 3]."""
        video = np.asarray(jax.device_get(self._decode(self._state, jnp.asarray(latents, jnp.float32))), np.float32)
        return np.stack([video_to_uint8(sample) for sample in video])


@dataclasses.dataclass
class Components:
    """What turns prompts into videos besides the DiT."""
    prompt_encoder: Any           # fvjax.text.PromptEncoder
    decoder: VideoDecoder

    @classmethod
    def load(cls, pipeline: str, *, where: object = "path", dtype: Any = None) -> "Components":
        from fvjax.families.wan.vae.loading import load_vae
        from fvjax.text.prompt import PromptEncoder

        return cls(PromptEncoder.load(pipeline, dtype, where=where), VideoDecoder(load_vae(pipeline, dtype)))


@dataclasses.dataclass(frozen=True)
class VideoRequest:
    num_frames: int = 81
    height: int = 480
    width: int = 832
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class PromptEmbeddings:
    context: jax.Array               # [B, 512, D]
    negative: jax.Array | None       # [B, 512, D] (the negative prompt, repeated), or None without guidance


def encode_prompts(prompt_encoder, prompts: Sequence[str], negative_prompt: str | None = None) -> PromptEmbeddings:
    context = jnp.asarray(prompt_encoder.encode(list(prompts)))
    negative = None
    if negative_prompt is not None:
        negative = jnp.asarray(prompt_encoder.encode([negative_prompt] * len(prompts)))
    return PromptEmbeddings(context, negative)


def render_videos(model_fn: ModelFn, params, in_channels: int, decoder: VideoDecoder, embeds: PromptEmbeddings,
                  spec: SamplerSpec, request: VideoRequest, *, progress: bool = False) -> np.ndarray:
    """uint8 frames [B, F, H, W, 3] from encoded prompts; one noise draw per prompt from `request.seed`."""
    negative = embeds.negative if spec.uses_guidance else None
    shape = latent_shape(request.num_frames, request.height, request.width, in_channels)
    noise = initial_noise(request.seed, embeds.context.shape[0], shape)
    key = jax.random.fold_in(jax.random.key(request.seed), 1)   # the DMD chain's re-noising, apart from x_T
    latents = denoise(model_fn, params, noise, embeds.context, spec, negative_context=negative, key=key,
                      progress=progress)
    return decoder(latents)


def generate_videos(model_fn: ModelFn, params, in_channels: int, components: Components, prompts: Sequence[str],
                    spec: SamplerSpec, request: VideoRequest, *, negative_prompt: str | None = None,
                    progress: bool = False) -> np.ndarray:
    """uint8 frames [len(prompts), F, H, W, 3]; one noise draw per prompt from `request.seed`."""
    embeds = encode_prompts(components.prompt_encoder, prompts, negative_prompt if spec.uses_guidance else None)
    return render_videos(model_fn, params, in_channels, components.decoder, embeds, spec, request,
                         progress=progress)

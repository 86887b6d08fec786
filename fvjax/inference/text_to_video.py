"""Prompts -> MP4-ready frames: UMT5 prompt embeddings, the sampling loop on any DiT call, the VAE decode.

Shared by `python -m fvjax.generate` (a loaded transformer) and validation during training (the live
student's params). The VAE and the text encoder come from a Diffusers pipeline directory (vae/,
text_encoder/, tokenizer/) or a hub id in the local HF cache, loaded by the model's family.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.inference.sampling import ModelFn, SamplerSpec, SeededNoise, denoise, latent_shape
from fvjax.io.video import video_to_uint8


class VideoDecoder:
    """A jitted VAE decode of the DiT's (normalised) latents into [-1, 1] videos [B, 3, F, H, W].

    `vae` is an nnx module, `decode(vae, latents) -> video` what the family does with it (Wan: undo the
    latent normalisation, then the VAE's decode)."""

    def __init__(self, vae, decode: Callable[[Any, jax.Array], jax.Array], *, temporal_compression: int = 4,
                 spatial_compression: int = 8):
        from flax import nnx

        self.config = vae.config
        self.compression = (temporal_compression, spatial_compression)
        graphdef, self._state = nnx.split(vae)
        self._decode = jax.jit(lambda state, z: decode(nnx.merge(graphdef, state), z.astype(jnp.float32)))

    def __call__(self, latents: jax.Array) -> np.ndarray:
        """uint8 frames [B, F, H, W, 3]."""
        video = np.asarray(jax.device_get(self._decode(self._state, latents)), np.float32)
        return np.stack([video_to_uint8(sample) for sample in video])


@dataclasses.dataclass
class Components:
    """What turns prompts into videos besides the DiT."""
    prompt_encoder: Any           # the family's (Wan: a UMT5 PromptEncoder)
    decoder: VideoDecoder

    @classmethod
    def load(cls, pipeline: str, family, *, where: object = "path", dtype: Any = None) -> "Components":
        """The text encoder and VAE of `family` (fvjax.families.Family) from `pipeline`."""
        return cls(family.load_prompt_encoder(pipeline, dtype, where=where),
                   family.load_video_decoder(pipeline, dtype, where=where))


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
    # device_put, not jnp.asarray: that compiles a copy program per shape
    context = jax.device_put(np.asarray(prompt_encoder.encode(list(prompts))))
    negative = None
    if negative_prompt is not None:
        negative = jax.device_put(np.asarray(prompt_encoder.encode([negative_prompt] * len(prompts))))
    return PromptEmbeddings(context, negative)


def render_videos(model_fn: ModelFn, params, in_channels: int, decoder: VideoDecoder, embeds: PromptEmbeddings,
                  spec: SamplerSpec, request: VideoRequest, *, progress: bool = False) -> np.ndarray:
    """uint8 frames [B, F, H, W, 3] from encoded prompts; one noise draw per prompt from `request.seed`."""
    negative = embeds.negative if spec.uses_guidance else None
    shape = latent_shape(request.num_frames, request.height, request.width, in_channels, *decoder.compression)
    noise = SeededNoise.of(request.seed, embeds.context.shape[0], shape)   # the DMD chain's key from it too
    latents = denoise(model_fn, params, noise, embeds.context, spec, negative_context=negative, progress=progress)
    return decoder(latents)


def generate_videos(model_fn: ModelFn, params, in_channels: int, components: Components, prompts: Sequence[str],
                    spec: SamplerSpec, request: VideoRequest, *, negative_prompt: str | None = None,
                    progress: bool = False) -> np.ndarray:
    """uint8 frames [len(prompts), F, H, W, 3]; one noise draw per prompt from `request.seed`."""
    embeds = encode_prompts(components.prompt_encoder, prompts, negative_prompt if spec.uses_guidance else None)
    return render_videos(model_fn, params, in_channels, components.decoder, embeds, spec, request,
                         progress=progress)

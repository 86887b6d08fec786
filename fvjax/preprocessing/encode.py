"""A family's VAE and text encoder (Wan: the Wan VAE and UMT5) applied to batches of clips and captions.

Latents are the VAE posterior MEAN, not a sample, and are not normalised by latents_mean/std: FastVideo's
preprocessing stores `vae.encode(pixels).mean` as it comes (its trainer normalises per batch).
Text embeddings are WanPipeline's prompt embeddings (cleaned prompt, UMT5, max_length tokens) cut to the
prompt's real length, as FastVideo strips the padding before storing.

Batches are padded to the fixed batch size so that one compiled program serves every batch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class ClipEncoder:
    def __init__(self, model: str, dtype: Any, batch_size: int, text_max_length: int, family=None):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from fvjax.families.registry import DEFAULT_FAMILY, get_family

        family = family or get_family(DEFAULT_FAMILY)

        self.batch_size = batch_size
        self.text_max_length = text_max_length
        vae = family.load_vae(model, dtype, where="--model")
        self.vae_config = vae.config
        self.prompts = family.load_prompt_encoder(model, dtype, where="--model", batch_size=batch_size)
        graphdef, state = nnx.split(vae)
        self._vae_state = state

        def encode_mean(state, pixels):
            # uint8 [B, F, H, W, 3] travels to the device (4x smaller than float); scaled to [-1, 1] there.
            video = jnp.transpose(pixels.astype(jnp.float32) / 127.5 - 1.0, (0, 4, 1, 2, 3))
            mean, _ = nnx.merge(graphdef, state).encode(video)
            return mean.astype(jnp.float32)

        self._encode_mean = jax.jit(encode_mean)

    def latents(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 clips [F, H, W, 3] (all one shape) -> float32 posterior means [n, z_dim, 1+(F-1)/4, H/8, W/8]."""
        pixels = _pad_batch(np.stack(clips), self.batch_size)
        return np.asarray(self._encode_mean(self._vae_state, pixels))[:len(clips)]

    def text(self, captions: Sequence[str]) -> list[np.ndarray]:
        """Each caption's embedding float32 [L_valid, d_model] (padding tokens removed)."""
        padded = list(captions) + [""] * (-len(captions) % self.batch_size)
        embeds, mask = self.prompts.encode_with_mask(padded, self.text_max_length)
        return [embeds[i, :int(mask[i].sum())].copy() for i in range(len(captions))]


def _pad_batch(batch: np.ndarray, size: int) -> np.ndarray:
    missing = -len(batch) % size
    if not missing:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], missing, axis=0)], axis=0)

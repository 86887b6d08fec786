"""One preprocessed sample as every on-disk format gives it, and the protocol of a random-access source."""
from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from fvjax.errors import UserError

FLAG = "training.data_path"
TEXT_ONLY_FOR_LATENTS = ("holds text embeddings only (FastVideo's text_only data: no video latents) but the method "
                         "reads video latents (finetune; dmd2 with rollout_mode data_latent); give a dataset with "
                         "latents, or use a method that reads text only (dmd2 with rollout_mode: simulate)")


class RawSample(NamedTuple):
    latents: np.ndarray | None  # float32 [C, T, H, W]; None in text-only data
    text_embeds: np.ndarray     # float32 [L, D], L = valid tokens (may exceed the padded length; cropped later)
    where: str                  # file (and row) it came from, for error messages


class Source(Protocol):
    path: str
    format: str
    has_latents: bool        # False: text-only data (every sample's latents are None)

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> RawSample: ...

    @property
    def fingerprint(self) -> dict: ...


def check_sample_shapes(latents: np.ndarray | None, text: np.ndarray, where: str, latent_key: str, text_key: str,
                        latent_channels: int = 16) -> None:
    if latents is not None and (latents.ndim != 4 or latents.shape[0] != latent_channels):
        raise UserError(where, latent_key, f"latents must be [{latent_channels}, T, H, W], got {list(latents.shape)}")
    if text.ndim != 2:
        raise UserError(where, text_key, f"text embedding must be [L, D], got {list(text.shape)}")

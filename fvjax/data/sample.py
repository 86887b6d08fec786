"""One preprocessed sample as every on-disk format gives it, and the protocol of a random-access source."""
from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from fvjax.errors import UserError

FLAG = "training.data_path"


class RawSample(NamedTuple):
    latents: np.ndarray      # float32 [C, T, H, W]
    text_embeds: np.ndarray  # float32 [L, D], L = valid tokens (may exceed the padded length; cropped later)
    where: str               # file (and row) it came from, for error messages


class Source(Protocol):
    path: str
    format: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> RawSample: ...

    @property
    def fingerprint(self) -> dict: ...


def check_sample_shapes(latents: np.ndarray, text: np.ndarray, where: str, latent_key: str, text_key: str,
                        latent_channels: int = 16) -> None:
    if latents.ndim != 4 or latents.shape[0] != latent_channels:
        raise UserError(where, latent_key, f"latents must be [{latent_channels}, T, H, W], got {list(latents.shape)}")
    if text.ndim != 2:
        raise UserError(where, text_key, f"text embedding must be [L, D], got {list(text.shape)}")

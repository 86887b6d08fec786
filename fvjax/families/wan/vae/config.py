"""Wan2.1 VAE configuration, field for field as Diffusers' `AutoencoderKLWan` config.json.

Only the Wan2.1 architecture is implemented (the Wan2.2 residual VAE with `is_residual`, `patch_size`
is not): fields that would select something else are rejected by name, and so are keys Diffusers'
AutoencoderKLWan does not know (metadata keys starting with "_" are ignored, as Diffusers does).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fvjax.errors import fail
from fvjax.io.json_file import read_json

DIFFUSERS_VAE_CLASS_NAME = "AutoencoderKLWan"

# Per-channel statistics of Wan2.1 latents (the released vae/config.json; Diffusers' defaults).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

# Diffusers encodes the first frame alone, then chunks of this many frames; each chunk becomes
# 4 / temporal_scale latent frames. fvjax supports the Wan2.1 temporal scale 4 (one latent per chunk).
ENCODE_CHUNK_FRAMES = 4


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # sic: Diffusers' spelling
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    is_residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int | None = None
    scale_factor_temporal: int | None = 4
    scale_factor_spatial: int | None = 8

    # -- derived -----------------------------------------------------------------------------------
    @property
    def spatial_scale(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_scale(self) -> int:
        return 2 ** sum(bool(t) for t in self.temperal_downsample)

    @property
    def temperal_upsample(self) -> tuple[bool, ...]:
        return tuple(reversed(self.temperal_downsample))

    @property
    def encoder_dims(self) -> list[int]:
        return [self.base_dim * m for m in (1, *self.dim_mult)]

    @property
    def decoder_dims(self) -> list[int]:
        base = self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim
        return [base * m for m in (self.dim_mult[-1], *reversed(self.dim_mult))]

    def num_latent_frames(self, num_frames: int) -> int:
        return 1 + (num_frames - 1) // self.temporal_scale

    def num_video_frames(self, num_latent_frames: int) -> int:
        return 1 + (num_latent_frames - 1) * self.temporal_scale

    # -- Diffusers config.json ---------------------------------------------------------------------
    @classmethod
    def from_diffusers_config(cls, cfg: dict[str, Any], where: object = "config.json") -> "WanVAEConfig":
        """Build from a Diffusers AutoencoderKLWan config dict; reject unknown or unsupported fields."""
        if not isinstance(cfg, dict):
            fail(where, None, f"not a JSON object; expected a Diffusers {DIFFUSERS_VAE_CLASS_NAME} config")
        class_name = cfg.get("_class_name")
        if class_name is not None and class_name != DIFFUSERS_VAE_CLASS_NAME:
            fail(where, "_class_name", f"is {class_name!r}, not an {DIFFUSERS_VAE_CLASS_NAME}; point the path "
                 "at a Wan VAE (the pipeline's vae/ folder)")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in cfg.items():
            if key.startswith("_"):
                continue  # _class_name, _diffusers_version, _name_or_path, ...: metadata
            if key not in fields:
                fail(where, key, f"unknown {DIFFUSERS_VAE_CLASS_NAME} config field; remove it (fvjax knows: "
                     f"{', '.join(sorted(fields))})")
            kwargs[key] = value
        for key in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            if key in kwargs:
                if not isinstance(kwargs[key], (list, tuple)):
                    fail(where, key, f"must be a list; got {kwargs[key]!r}")
                kwargs[key] = tuple(kwargs[key])
        config = cls(**kwargs)
        config.check(where)
        return config

    def check(self, where: object = "config") -> None:
        def positive_int(key: str, value: object) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(where, key, f"must be a positive integer; got {value!r}")

        for key in ("base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels"):
            positive_int(key, getattr(self, key))
        if self.decoder_base_dim is not None:
            positive_int("decoder_base_dim", self.decoder_base_dim)
        if not self.dim_mult:
            fail(where, "dim_mult", "must not be empty")
        for m in self.dim_mult:
            positive_int("dim_mult", m)
        if self.is_residual:
            fail(where, "is_residual", "is true (the Wan2.2 residual VAE); fvjax implements the Wan2.1 VAE only")
        if self.patch_size is not None:
            fail(where, "patch_size", f"is {self.patch_size!r} (a Wan2.2 patchified VAE); fvjax implements the "
                 "Wan2.1 VAE only (patch_size null)")
        if self.attn_scales:
            fail(where, "attn_scales", f"is {list(self.attn_scales)}; encoder attention at down-sampling scales is "
                 "not implemented (Wan2.1 uses [])")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            fail(where, "temperal_downsample", f"has {len(self.temperal_downsample)} entries; dim_mult "
                 f"{list(self.dim_mult)} needs {len(self.dim_mult) - 1} (one per down-sampling level)")
        if self.temporal_scale != ENCODE_CHUNK_FRAMES:
            fail(where, "temperal_downsample", f"{list(self.temperal_downsample)} gives temporal scale "
                 f"{self.temporal_scale}; fvjax supports exactly two temporal down-samplings (scale 4, Wan2.1)")
        if self.scale_factor_temporal is not None and self.scale_factor_temporal != self.temporal_scale:
            fail(where, "scale_factor_temporal", f"is {self.scale_factor_temporal} but temperal_downsample "
                 f"gives {self.temporal_scale}")
        if self.scale_factor_spatial is not None and self.scale_factor_spatial != self.spatial_scale:
            fail(where, "scale_factor_spatial", f"is {self.scale_factor_spatial} but dim_mult gives "
                 f"{self.spatial_scale}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            fail(where, "dropout", f"must be a number in [0, 1); got {self.dropout!r}")
        for key in ("latents_mean", "latents_std"):
            values = getattr(self, key)
            if len(values) != self.z_dim or not all(isinstance(v, (int, float)) for v in values):
                fail(where, key, f"must be a list of z_dim={self.z_dim} numbers; got {len(values)} entries")
        if any(v <= 0 for v in self.latents_std):
            fail(where, "latents_std", "must be positive")

    def to_diffusers_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_class_name": DIFFUSERS_VAE_CLASS_NAME}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json_file(cls, path: str | Path) -> "WanVAEConfig":
        return cls.from_diffusers_config(read_json(path), where=Path(path))

_WAN21 = WanVAEConfig()

# The published checkpoints' vae/config.json (both Wan2.1 T2V sizes share one VAE).
VAE_PRESETS: dict[str, WanVAEConfig] = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": _WAN21,
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": _WAN21,
    # Tests and CPU demos: the Wan2.1 layout with 8 base channels. z_dim stays 16 (and the real latent
    # statistics) so it pairs with the "tiny" DiT preset (in_channels 16).
    "tiny": WanVAEConfig(base_dim=8),
}

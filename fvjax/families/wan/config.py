"""Wan2.1 transformer configuration, field for field as Diffusers' `WanTransformer3DModel` config.json."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fvjax.errors import fail
from fvjax.io.json_file import read_json

DIFFUSERS_CLASS_NAME = "WanTransformer3DModel"


@dataclasses.dataclass(frozen=True)
class WanConfig:
    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    cross_attn_norm: bool = True
    qk_norm: str | None = "rms_norm_across_heads"
    eps: float = 1e-6
    image_dim: int | None = None
    added_kv_proj_dim: int | None = None
    rope_max_seq_len: int = 1024
    pos_embed_seq_len: int | None = None

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def patch_features(self) -> int:
        pt, ph, pw = self.patch_size
        return pt * ph * pw

    @classmethod
    def from_diffusers_config(cls, cfg: dict[str, Any], where: object = "config.json") -> "WanConfig":
        """Build from a Diffusers transformer config dict; reject what is not a Wan2.1 T2V transformer."""
        if not isinstance(cfg, dict):
            fail(where, None, "not a JSON object; expected a Diffusers WanTransformer3DModel config")
        class_name = cfg.get("_class_name")
        if class_name is not None and class_name != DIFFUSERS_CLASS_NAME:
            fail(where, "_class_name", f"is {class_name!r}, not a {DIFFUSERS_CLASS_NAME}; "
                 "point the path at a Wan transformer (the pipeline's transformer/ folder)")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in cfg.items() if k in fields}
        if "num_layers" not in kwargs or "num_attention_heads" not in kwargs:
            fail(where, "num_layers", "missing; this does not look like a Wan transformer config")
        if "patch_size" in kwargs:
            kwargs["patch_size"] = tuple(int(p) for p in kwargs["patch_size"])
        config = cls(**kwargs)
        config.check(where)
        return config

    def check(self, where: object = "config") -> None:
        if self.image_dim is not None or self.added_kv_proj_dim is not None or self.pos_embed_seq_len is not None:
            fail(where, "image_dim", "image-to-video Wan transformers (image_dim / added_kv_proj_dim / "
                 "pos_embed_seq_len set) are not supported yet; use a T2V checkpoint")
        if self.qk_norm not in ("rms_norm_across_heads",):
            fail(where, "qk_norm", f"is {self.qk_norm!r}; only 'rms_norm_across_heads' (Wan2.1) is supported")
        if self.attention_head_dim % 2:
            fail(where, "attention_head_dim", "must be even (RoPE rotates pairs)")
        if len(self.patch_size) != 3:
            fail(where, "patch_size", "must have three entries (t, h, w)")

    def to_diffusers_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_class_name": DIFFUSERS_CLASS_NAME}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json_file(cls, path: str | Path) -> "WanConfig":
        return cls.from_diffusers_config(read_json(path), where=Path(path))

# The published checkpoints (values of their transformer/config.json).
PRESETS: dict[str, WanConfig] = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": WanConfig(
        num_attention_heads=12, ffn_dim=8960, num_layers=30),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": WanConfig(
        num_attention_heads=40, ffn_dim=13824, num_layers=40),
    # Tiny configurations for tests and CPU demos (random weights, no download).
    "tiny": WanConfig(
        num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, text_dim=32,
        freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=64),
    "tiny-hd128": WanConfig(
        num_attention_heads=2, attention_head_dim=128, in_channels=16, out_channels=16, text_dim=64,
        freq_dim=32, ffn_dim=96, num_layers=3, rope_max_seq_len=64),
    # A bigger tiny model with the same text_dim and channels as "tiny": a DMD2 teacher for a "tiny"
    # student (the seed's recipe distills a larger teacher into a smaller student too).
    "tiny-teacher": WanConfig(
        num_attention_heads=4, attention_head_dim=16, in_channels=16, out_channels=16, text_dim=32,
        freq_dim=32, ffn_dim=128, num_layers=3, rope_max_seq_len=64),
}

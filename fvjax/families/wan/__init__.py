"""The Wan2.1 model family: DiT, VAE, UMT5 text encoder, presets, Diffusers key maps (family.py)."""
from fvjax.families.wan.config import PRESETS, WanConfig

__all__ = ["PRESETS", "WanConfig"]

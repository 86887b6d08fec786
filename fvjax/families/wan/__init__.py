"""The Wan2.1 model family: DiT (and later VAE, UMT5), presets, Diffusers key maps."""
from fvjax.families.wan.config import PRESETS, WanConfig

__all__ = ["PRESETS", "WanConfig"]

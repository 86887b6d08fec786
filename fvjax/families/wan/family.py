"""The Wan2.1 text-to-video family: the DiT (transformer.py), its Diffusers key map (keymap.py), the
causal video VAE (vae/), the UMT5 text encoder (text/), and the pipeline defaults FastVideo uses."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fvjax.errors import fail
from fvjax.families.api import Family, PipelineDefaults
from fvjax.families.wan.config import PRESETS, WanConfig, DIFFUSERS_CLASS_NAME
from fvjax.families.wan.text.prompt import WAN_DEFAULT_NEGATIVE_PROMPT

# FastVideo's pipeline-config registry: the 1.3B model maps to its 480P config (shift 3), the 14B model to
# its 720P config (shift 5). Anything else gets the 480P default.
_FLOW_SHIFT = {"Wan-AI/Wan2.1-T2V-1.3B-Diffusers": 3.0, "Wan-AI/Wan2.1-T2V-14B-Diffusers": 5.0}


class WanFamily(Family):
    name = "wan"
    display_name = "Wan"
    diffusers_class_name = DIFFUSERS_CLASS_NAME
    model_label = "Wan2.1 T2V transformer"
    fastvideo_targets = ("fastvideo.train.models.wan.WanModel", "fastvideo.train.models.wan.wan.WanModel")
    presets = PRESETS
    defaults = PipelineDefaults(negative_prompt=WAN_DEFAULT_NEGATIVE_PROMPT)
    # FastVideo's Wan arch config exclude_lora_layers: no LoRA on module names containing these (fvjax/lora)
    lora_excluded_modules = ("embedder",)

    def config_from_diffusers(self, raw: dict, where: object) -> WanConfig:
        return WanConfig.from_diffusers_config(raw, where=where)

    def config_to_diffusers(self, config: WanConfig) -> dict:
        return config.to_diffusers_config()

    def describe(self, config: WanConfig) -> str:
        return f"{config.num_layers} layers, dim {config.inner_dim}"

    def config_summary(self, config: WanConfig) -> str:
        return (f"num_layers={config.num_layers}, num_attention_heads={config.num_attention_heads}, "
                f"attention_head_dim={config.attention_head_dim}, ffn_dim={config.ffn_dim}")

    def build_model(self, config: WanConfig, *, rngs, param_dtype, dtype, remat_policy: str = "none",
                    attention_backend: str = "auto"):
        from fvjax.families.wan.transformer import WanTransformer

        return WanTransformer(config, rngs=rngs, param_dtype=param_dtype, dtype=dtype, remat_policy=remat_policy,
                              attention_backend=attention_backend)

    def tensor_keys(self, config: WanConfig) -> list:
        from fvjax.families.wan.keymap import tensor_keys

        return tensor_keys(config)

    def forward_flops(self, config: WanConfig, latent_shape, text_len: int) -> float:
        """scale_out.md §7: L (12 N D^2 + 4 N D F + 4 N^2 D + 4 N T D + 4 T D^2), N tokens after patching, T text
        tokens (patch embedding, time embedding, modulation and head are under 1% and left out)."""
        _, frames, height, width = latent_shape
        pt, ph, pw = config.patch_size
        n = (frames // pt) * (height // ph) * (width // pw)
        d, f, t = config.inner_dim, config.ffn_dim, text_len
        return float(config.num_layers * (12 * n * d * d + 4 * n * d * f + 4 * n * n * d + 4 * n * t * d + 4 * t * d * d))

    def default_flow_shift(self, model_path: str) -> float:
        return _FLOW_SHIFT.get(model_path.rstrip("/"), self.defaults.flow_shift)

    def check_training(self, training: Any, where: object) -> None:
        # FastVideo's Wan family refuses to build without a seed.
        if training.seed is None:
            fail(where, "training.seed", "missing; Wan training needs a seed (FastVideo recipes use e.g. 1000)")

    def latent_statistics(self, pipeline_path: str | None):
        """FastVideo normalises with the model_path pipeline's VAE: its vae/config.json when there is one,
        else Wan2.1's (both T2V sizes share it)."""
        from fvjax.families.wan.vae.config import VAE_PRESETS, WanVAEConfig

        config = os.path.join(os.path.expanduser(pipeline_path), "vae", "config.json") if pipeline_path else ""
        vae = WanVAEConfig.from_json_file(config) if config and os.path.isfile(config) \
            else VAE_PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
        return tuple(vae.latents_mean), tuple(vae.latents_std)

    def is_pipeline(self, path: Path) -> bool:
        return (path / "vae").is_dir() and (path / "text_encoder").is_dir()

    def load_prompt_encoder(self, pipeline: str, dtype: Any = None, *, where: object = "path", batch_size: int = 8):
        from fvjax.families.wan.text.prompt import PromptEncoder

        return PromptEncoder.load(pipeline, dtype, where=where, batch_size=batch_size)

    def load_vae(self, pipeline: str, dtype: Any = None, *, where: object = "path"):
        from fvjax.families.wan.vae.loading import load_vae

        return load_vae(pipeline, dtype, where=where)

    def load_video_decoder(self, pipeline: str, dtype: Any = None, *, where: object = "path"):
        from fvjax.families.wan.vae.latents import denormalize_latents
        from fvjax.inference.text_to_video import VideoDecoder

        return VideoDecoder(self.load_vae(pipeline, dtype, where=where),
                            lambda vae, z: vae.decode(denormalize_latents(z, vae.config)),
                            temporal_compression=self.defaults.temporal_compression,
                            spatial_compression=self.defaults.spatial_compression)

    def write_demo_pipeline(self, out: str | Path, seed: int = 0) -> Path:
        from fvjax.families.wan.tiny_pipeline import write_tiny_pipeline

        return write_tiny_pipeline(out, seed)


WAN = WanFamily()

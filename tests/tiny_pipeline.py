"""A tiny random Wan text-to-video pipeline in Diffusers' on-disk layout, built offline for tests.

`write_tiny_wan_pipeline(dir)` saves a diffusers WanPipeline (transformer/, vae/, text_encoder/, tokenizer/,
scheduler/, model_index.json) through save_pretrained, so fvjax reads exactly what Diffusers writes:
- transformer: WanTransformer3DModel with fvjax's "tiny" DiT config (text_dim 32), weights perturbed;
- vae: AutoencoderKLWan, Wan2.1 layout with base_dim 8 (z_dim 16, the real latents_mean/std);
- text_encoder: transformers UMT5EncoderModel, d_model 32 (Wan's gated-gelu feed-forward), vocab 256;
- tokenizer: a T5 (Unigram) tokenizer over a ~130-piece vocabulary (characters, a few words), no
  download and no sentencepiece training;
- scheduler: UniPCMultistepScheduler with the flow-matching settings of Wan's Diffusers conversion.
"""
from __future__ import annotations

from pathlib import Path

import torch

TEXT_DIM = 32          # UMT5 d_model = the tiny DiT's text_dim
TEXT_VOCAB = 256


def tiny_tokenizer():
    """fvjax's tiny T5 (Unigram) tokenizer, ids below TEXT_VOCAB (the one `python -m fvjax.tiny_pipeline` writes)."""
    from fvjax.families.wan.tiny_pipeline import tiny_tokenizer as build

    return build(TEXT_VOCAB)


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (zero-initialised biases and unit norm scales would hide mapping bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (0.1 if p.ndim == 1 else 0.02))
    return model.float().eval()


def tiny_vae(seed: int = 1):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return _perturb(AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                     attn_scales=[], temperal_downsample=[False, True, True]), seed)


def tiny_text_encoder(seed: int = 2):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=TEXT_VOCAB, d_model=TEXT_DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    return _perturb(UMT5EncoderModel(config), seed)


def tiny_transformer(seed: int = 3):
    from diffusers import WanTransformer3DModel

    from fvjax.families.wan.config import PRESETS

    cfg = PRESETS["tiny"].to_diffusers_config()
    cfg.pop("_class_name", None)
    assert cfg["text_dim"] == TEXT_DIM
    torch.manual_seed(seed)
    return _perturb(WanTransformer3DModel(**cfg), seed)


def write_tiny_wan_pipeline(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny random WanPipeline at `directory` (created); returns it."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    directory = Path(directory)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tiny_tokenizer(), text_encoder=tiny_text_encoder(seed + 2), vae=tiny_vae(seed + 1),
                       transformer=tiny_transformer(seed + 3), scheduler=scheduler)
    pipe.save_pretrained(directory)
    return directory

"""Test-side helpers for the VAE tests: tiny Diffusers AutoencoderKLWan models with random weights."""
from __future__ import annotations

from pathlib import Path

import torch

from fvjax.families.wan.vae.config import WanVAEConfig


def diffusers_kwargs(config: WanVAEConfig) -> dict:
    return {k: v for k, v in config.to_diffusers_config().items() if not k.startswith("_")}


def torch_vae(config: WanVAEConfig, seed: int = 0, logvar_bias: float = 0.0):
    """A random AutoencoderKLWan in eval mode. Norm gammas and biases are randomised too (Diffusers
    initialises them to ones / zeros, which would hide layout mistakes). `logvar_bias` pushes the first
    two logvar channels up and the next two down by that much, to exercise the posterior's clamp."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    model = AutoencoderKLWan(**diffusers_kwargs(config)).eval()
    z = config.z_dim
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
        model.quant_conv.bias[z:z + 2] += logvar_bias
        model.quant_conv.bias[z + 2:z + 4] -= logvar_bias
    return model


def save_vae(model, directory: Path) -> Path:
    model.save_pretrained(directory, safe_serialization=True)
    return directory

"""The Wan2.1 video VAE (Diffusers `AutoencoderKLWan`): config, NNX model, key map, loader, latent helpers.

Nothing here imports jax at package import except through the submodules that need it.
"""
from fvjax.families.wan.vae.config import VAE_PRESETS, WanVAEConfig

__all__ = ["VAE_PRESETS", "WanVAEConfig", "WanVAE", "load_vae", "load_vae_params",
           "abstract_vae_params", "count_vae_params", "vae_tensor_keys", "normalize_latents",
           "denormalize_latents", "sample_posterior"]

_LAZY = {
    "WanVAE": "model", "abstract_vae_params": "model", "count_vae_params": "model", "vae_from_params": "model",
    "vae_params_of": "model", "load_vae": "loading", "load_vae_params": "loading", "resolve_vae_dir": "loading",
    "vae_tensor_keys": "keymap", "normalize_latents": "latents", "denormalize_latents": "latents",
    "sample_posterior": "latents",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"fvjax.families.wan.vae.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fvjax.families.wan.vae' has no attribute {name!r}")

"""Weights: Diffusers safetensors <-> fvjax params (orbax), path resolution, loading onto a mesh.

Nothing here imports jax, orbax or torch at module import; they load on first use.
"""
from fvjax.weights.conversion import diffusers_to_fvjax, fvjax_to_diffusers
from fvjax.weights.diffusers_reader import DiffusersCheckpoint
from fvjax.weights.diffusers_writer import write_diffusers_dir
from fvjax.weights.fvjax_dir import read_fvjax_config, restore_fvjax_dir, write_fvjax_dir
from fvjax.weights.loading import LoadedTransformer, load_params, load_transformer
from fvjax.weights.paths import WeightsLocation, resolve

__all__ = [
    "DiffusersCheckpoint", "LoadedTransformer", "WeightsLocation", "diffusers_to_fvjax", "fvjax_to_diffusers",
    "load_params", "load_transformer", "read_fvjax_config", "resolve", "restore_fvjax_dir", "write_diffusers_dir",
    "write_fvjax_dir",
]

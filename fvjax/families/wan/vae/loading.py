"""Load the Wan2.1 VAE from a Diffusers pipeline dir (its vae/), a VAE dir, or a cached hub id.

All checks (config, every key present, nothing unexpected, shapes, dtypes) run on the safetensors
headers before any tensor is read, so a bad checkpoint fails fast with one line naming file and key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fvjax.errors import fail
from fvjax.families.wan.vae.config import DIFFUSERS_VAE_CLASS_NAME, WanVAEConfig
from fvjax.families.wan.vae.keymap import vae_tensor_keys
from fvjax.models.params import nest
from fvjax.weights.dtypes import as_dtype
from fvjax.weights.paths import (CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, hub_snapshot, looks_like_hub_id,
                                 pipeline_component, weight_files)
from fvjax.weights.safetensors_io import DTYPES, SafetensorsFile

_FLOAT_NAMES = ("F32", "BF16", "F16")


def resolve_vae_dir(path: str | os.PathLike, where: str = "path") -> Path:
    """The directory holding the VAE's config.json and weights that `path` names."""
    given = str(path)
    p = Path(given).expanduser()
    if not p.exists():
        if not looks_like_hub_id(given):
            fail(where, None, f"{given}: no such file or directory (expected a Diffusers pipeline directory, "
                 "a VAE directory with config.json, or a Hugging Face hub id org/name)")
        p = hub_snapshot(given, where, "model_index.json 'vae/*'")
    if p.is_file():
        fail(p, None, "is a file; pass the directory that holds it (a VAE directory with config.json, or a "
             "pipeline directory with model_index.json)")
    if (p / "model_index.json").is_file():
        return pipeline_component(p, "vae", "VAE", DIFFUSERS_VAE_CLASS_NAME, "the Wan2.1 VAE")
    if (p / CONFIG_NAME).is_file():
        return p
    if (p / "vae" / CONFIG_NAME).is_file():
        return p / "vae"
    fail(p, None, "not a VAE directory: no model_index.json (Diffusers pipeline) or config.json (Diffusers "
         "AutoencoderKLWan) in it")


def load_vae_params(path: str | os.PathLike, dtype: Any = None, *, where: str = "path"
                    ) -> tuple[WanVAEConfig, dict]:
    """(config, params pure dict of jax arrays). dtype None keeps the stored dtype (that of the bulk of
    the tensors if they are mixed); else "float32" / "bfloat16" / "float16" / a dtype."""
    import jax

    dt = as_dtype(dtype, where="dtype")
    directory = resolve_vae_dir(path, where=where)
    config = WanVAEConfig.from_json_file(directory / CONFIG_NAME)
    listing, weight_map = weight_files(directory, WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "diffusers")
    files = {f: SafetensorsFile(f) for f in dict.fromkeys(weight_map.values())}
    keys = vae_tensor_keys(config)
    expected = {k.diffusers_key: k for k in keys}
    described = (f"base_dim={config.base_dim}, z_dim={config.z_dim}, dim_mult={list(config.dim_mult)}, "
                 f"num_res_blocks={config.num_res_blocks}")
    for name in expected:
        if name not in weight_map:
            fail(listing, name, f"missing: a Wan2.1 VAE with this config.json ({described}) has this tensor; the "
                 "checkpoint is incomplete or does not match its config.json")
    for file, header in files.items():
        for name in header.entries:
            if name not in expected:
                fail(file, name, f"unexpected tensor: not part of a Wan2.1 VAE with config.json's {described}; the "
                     "weights do not match their config.json")
        for name in (n for n, f in weight_map.items() if f == file):
            if name not in header.entries:
                fail(file, name, "missing: listed in the index but not in this shard; re-download it")
    sizes: dict[str, int] = {}
    for name, key in expected.items():
        entry = files[weight_map[name]].entries[name]
        if entry.shape != key.torch_shape:
            fail(weight_map[name], name, f"wrong shape {list(entry.shape)}; config.json ({described}) needs "
                 f"{list(key.torch_shape)}")
        if entry.dtype not in _FLOAT_NAMES:
            fail(weight_map[name], name, f"wrong dtype {entry.dtype}; VAE weights must be F32, BF16 or F16")
        sizes[entry.dtype] = sizes.get(entry.dtype, 0) + entry.nbytes
    target = dt if dt is not None else DTYPES[max(sizes, key=sizes.get)]
    flat = {}
    for key in keys:
        host = files[weight_map[key.diffusers_key]].read(key.diffusers_key)
        # device_put, not jnp.asarray: that compiles a copy program per tensor shape
        flat[key.path] = jax.device_put(np.ascontiguousarray(key.to_fvjax(host)).astype(target, copy=False))
    return config, nest(flat)


def load_vae(path: str | os.PathLike, dtype: Any = None, *, where: str = "path", **model_kwargs):
    """A WanVAE from a Diffusers pipeline dir (vae/), a VAE dir, or a hub id in the local HF cache.

    dtype: parameter and compute dtype (None: the stored dtype). model_kwargs go to WanVAE (conv_impl)."""
    from fvjax.families.wan.vae.model import vae_from_params

    import jax

    config, params = load_vae_params(path, dtype, where=where)
    param_dtype = jax.tree_util.tree_leaves(params)[0].dtype  # all leaves share one dtype
    model_kwargs.setdefault("dtype", param_dtype)
    return vae_from_params(config, params, param_dtype=param_dtype, **model_kwargs)

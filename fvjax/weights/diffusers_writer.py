"""fvjax params -> a Diffusers `WanTransformer3DModel` directory (config.json + safetensors).

Sharding follows Diffusers' `save_pretrained`: tensors in state_dict order, a new shard whenever the
next tensor would pass `max_shard_size` (decimal units, "10GB" = 10**10 bytes), the index
`diffusion_pytorch_model.safetensors.index.json` only when there is more than one shard. Each tensor is
converted back to the torch layout just before it is written, so the writer holds one tensor beyond
the params themselves.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np

from fvjax.errors import fail
from fvjax.families.wan.config import WanConfig
from fvjax.families.wan.keymap import TensorKey, flatten, tensor_keys
from fvjax.weights.fvjax_dir import diffusers_config_text
from fvjax.weights.paths import CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from fvjax.weights.safetensors_io import TensorSpec, write_safetensors

DEFAULT_MAX_SHARD_SIZE = "10GB"  # Diffusers' save_pretrained default
_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def parse_size(size: int | str, where: str = "--max-shard-size") -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]B)?\s*", str(size), re.IGNORECASE)
    if not m:
        fail(where, None, f"{size!r} is not a size; write e.g. 10GB, 500MB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()] if m.group(2) else float(m.group(1)))


def plan_shards(specs: list[TensorSpec], max_shard_size: int) -> list[list[TensorSpec]]:
    shards: list[list[TensorSpec]] = []
    current: list[TensorSpec] = []
    current_size = 0
    for s in specs:
        if s.nbytes > max_shard_size:  # alone in its own shard, as Diffusers does
            shards.append([s])
            continue
        if current and current_size + s.nbytes > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(s)
        current_size += s.nbytes
    if current:
        shards.append(current)
    return shards


def write_diffusers_dir(directory: str | Path, config: WanConfig, params: dict, *, raw_config: dict | None = None,
                        dtype: np.dtype | None = None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
                        on_tensor: Callable[[int], None] | None = None) -> list[str]:
    """Write config.json + safetensors into the existing empty `directory`; returns the weight file names."""
    directory = Path(directory)
    flat = flatten(params)
    keys: dict[str, TensorKey] = {k.diffusers_key: k for k in tensor_keys(config)}

    def out_dtype(k: TensorKey) -> np.dtype:
        return np.dtype(dtype) if dtype is not None else np.dtype(flat[k.path].dtype)

    def produce(name: str) -> np.ndarray:
        k = keys[name]
        leaf = np.asarray(flat[k.path])
        row = leaf[k.layer] if k.layer is not None else leaf
        return k.to_diffusers(row).astype(out_dtype(k), copy=False)

    specs = [TensorSpec(name, out_dtype(k), k.torch_shape) for name, k in keys.items()]
    shards = plan_shards(specs, parse_size(max_shard_size))
    names = ([WEIGHTS_NAME] if len(shards) == 1 else
             [WEIGHTS_NAME.replace(".safetensors", f"-{i + 1:05d}-of-{len(shards):05d}.safetensors")
              for i in range(len(shards))])
    for fname, shard in zip(names, shards):
        write_safetensors(directory / fname, shard, produce, metadata={"format": "pt"}, on_tensor=on_tensor)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(s.nbytes for s in specs)},
                 "weight_map": {s.name: fname for fname, shard in zip(names, shards) for s in shard}}
        (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (directory / CONFIG_NAME).write_text(diffusers_config_text(raw_config or config.to_diffusers_config()))
    return names

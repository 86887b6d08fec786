"""fvjax params -> a Diffusers transformer directory (config.json + safetensors), for any family.

Sharding follows Diffusers' `save_pretrained`: tensors in state_dict order, a new shard whenever the
next tensor would pass `max_shard_size` (decimal units, "10GB" = 10**10 bytes), the index
`diffusion_pytorch_model.safetensors.index.json` only when there is more than one shard. The writer
goes leaf by leaf (every file's header is written first and fixes each tensor's offset), converting
each of a leaf's tensors (one per layer for stacked leaves) back to the torch layout just before it is
written: beyond the leaves it is given, it holds one tensor, and with leaves read lazily from disk
(`write_diffusers_leaves`) one leaf at a time.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fvjax.errors import fail
from fvjax.families.api import Family
from fvjax.models.keymap import keys_by_leaf
from fvjax.models.params import flatten
from fvjax.weights.fvjax_dir import diffusers_config_text
from fvjax.weights.paths import CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from fvjax.weights.safetensors_io import SafetensorsWriter, TensorSpec

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


def write_diffusers_dir(directory: str | Path, family: Family, config, params: dict, *, raw_config: dict | None = None,
                        dtype: np.dtype | None = None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
                        on_tensor: Callable[[int], None] | None = None) -> list[str]:
    """Write config.json + safetensors of `params` (pure dict of numpy or jax arrays) into the existing
    empty `directory`; returns the weight file names."""
    flat = flatten(params)
    return write_diffusers_leaves(directory, family, config, flat.items(), {p: a.dtype for p, a in flat.items()},
                                  raw_config=raw_config, dtype=dtype, max_shard_size=max_shard_size,
                                  on_tensor=on_tensor)


def write_diffusers_leaves(directory: str | Path, family: Family, config, leaves: Iterable[tuple[tuple[str, ...], object]],
                           leaf_dtypes: dict[tuple[str, ...], np.dtype], *, raw_config: dict | None = None,
                           dtype: np.dtype | None = None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
                           on_tensor: Callable[[int], None] | None = None) -> list[str]:
    """As `write_diffusers_dir`, from `leaves`: (path, leaf) pairs in any order, each leaf used once and
    dropped (so a lazy iterator keeps one leaf in memory); `leaf_dtypes` are their dtypes (the default
    output dtypes), needed up front for the headers."""
    directory = Path(directory)
    keys = family.tensor_keys(config)
    by_leaf = keys_by_leaf(keys)

    def out_dtype(path: tuple[str, ...]) -> np.dtype:
        return np.dtype(dtype) if dtype is not None else np.dtype(leaf_dtypes[path])

    specs = [TensorSpec(k.diffusers_key, out_dtype(k.path), k.torch_shape) for k in keys]
    shards = plan_shards(specs, parse_size(max_shard_size))
    names = ([WEIGHTS_NAME] if len(shards) == 1 else
             [WEIGHTS_NAME.replace(".safetensors", f"-{i + 1:05d}-of-{len(shards):05d}.safetensors")
              for i in range(len(shards))])
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(SafetensorsWriter(directory / fname, shard, metadata={"format": "pt"}))
                 for fname, shard in zip(names, shards)]
        file_of = {s.name: f for f, shard in zip(files, shards) for s in shard}
        for path, leaf in leaves:
            for k in by_leaf[path]:
                # Index before converting: a jax leaf then moves one row to the host, not the whole leaf.
                tensor = k.to_diffusers(np.asarray(leaf if k.layer is None else leaf[k.layer]))
                file_of[k.diffusers_key].write(k.diffusers_key, tensor.astype(out_dtype(path), copy=False))
                del tensor  # one tensor at a time
                if on_tensor is not None:
                    on_tensor(math.prod(k.torch_shape) * out_dtype(path).itemsize)
            del leaf  # before the next leaf is read
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(s.nbytes for s in specs)},
                 "weight_map": {s.name: fname for fname, shard in zip(names, shards) for s in shard}}
        (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (directory / CONFIG_NAME).write_text(diffusers_config_text(raw_config or family.config_to_diffusers(config)))
    return names

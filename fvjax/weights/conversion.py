"""The two conversions behind `python -m fvjax.convert`, atomic and tensor by tensor."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from fvjax.errors import fail
from fvjax.families.registry import transformer_classes
from fvjax.models.params import nest
from fvjax.io.atomic import atomic_directory
from fvjax.weights.diffusers_reader import DiffusersCheckpoint
from fvjax.weights.diffusers_writer import DEFAULT_MAX_SHARD_SIZE, parse_size, write_diffusers_leaves
from fvjax.weights.fvjax_dir import family_of, read_fvjax_config, read_fvjax_leaves, write_fvjax_dir
from fvjax.weights.paths import resolve


@contextlib.contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator:
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
              dynamic_ncols=True) as bar:
        yield bar.update


def diffusers_to_fvjax(src: str | Path, dst: str | Path, dtype: np.dtype | None = None, *,
                       progress: bool = True) -> Path:
    """Diffusers transformer (dir, pipeline dir or cached hub id) -> a new fvjax weights dir at `dst`."""
    loc = resolve(src, where="--src", transformers=transformer_classes())
    if loc.kind != "diffusers":
        fail("--src", None, f"{src} is already an fvjax weights directory; use fvjax-to-diffusers to export it")
    ckpt = DiffusersCheckpoint(loc.directory)  # every check runs here, before --dst is created
    with atomic_directory(dst) as tmp:
        with _progress(ckpt.nbytes, "diffusers -> fvjax", progress) as advance:
            # The leaves are the one copy of the output held in memory; each is filled in place.
            params = nest(dict(ckpt.leaves(dtype, on_tensor=advance)))
        write_fvjax_dir(tmp, ckpt.family, ckpt.config, params, raw_config=ckpt.raw_config, source=str(src))
        del params
    return Path(dst)


def fvjax_to_diffusers(src: str | Path, dst: str | Path, dtype: np.dtype | None = None, *,
                       max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE, progress: bool = True) -> list[str]:
    """fvjax weights dir -> a new Diffusers transformer dir at `dst`; returns the safetensors file names."""
    loc = resolve(src, where="--src", transformers=transformer_classes())
    if loc.kind != "fvjax":
        fail("--src", None, f"{src} is not an fvjax weights directory (no fvjax_manifest.json); "
             "use diffusers-to-fvjax to convert Diffusers weights")
    limit = parse_size(max_shard_size)
    _, raw_config, manifest = read_fvjax_config(loc.directory)
    family = family_of(manifest, loc.directory)
    config, dtypes, leaves = read_fvjax_leaves(loc.directory)  # every check runs here, before --dst is created
    out_dtypes = {p: np.dtype(dtype) if dtype is not None else d for p, d in dtypes.items()}
    total = sum(math.prod(k.torch_shape) * out_dtypes[k.path].itemsize for k in family.tensor_keys(config))
    with atomic_directory(dst) as tmp, _progress(total, "fvjax -> diffusers", progress) as advance:
        # Leaf by leaf from disk: one leaf (plus its read buffer) and one tensor in memory at a time.
        return write_diffusers_leaves(tmp, family, config, leaves, dtypes, raw_config=raw_config, dtype=dtype,
                                      max_shard_size=limit, on_tensor=advance)

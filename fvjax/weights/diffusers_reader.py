"""Read a Diffusers transformer checkpoint of any registered family into fvjax leaves, one leaf at a time.

All checks (config, every key present, nothing unexpected, shapes, dtypes, file sizes) run on the
headers before any tensor data is read, so a bad checkpoint fails fast and names the file and key.
A leaf is filled tensor by tensor into one preallocated buffer (stacked block leaves row by row),
cast to the target dtype in the same copy.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from fvjax.errors import fail
from fvjax.families.api import Family
from fvjax.families.registry import family_for_class
from fvjax.models.keymap import COPY, TensorKey, keys_by_leaf
from fvjax.weights.dtypes import FLOAT_DTYPES
from fvjax.weights.paths import CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, read_json, weight_files
from fvjax.weights.safetensors_io import DTYPES, SafetensorsFile

_FLOAT_NAMES = ("F32", "BF16", "F16")


class DiffusersCheckpoint:
    """A Diffusers transformer directory: config.json + safetensors (single or sharded). The family is
    the one given, else the one whose transformer class config.json names."""

    def __init__(self, directory: str | Path, *, family: Family | None = None,
                 weights_file: str | Path | None = None, config=None):
        """`directory` holds config.json and the weights. Alternatively `weights_file` (one safetensors
        file with Diffusers key names, e.g. FastVideo's init_weights_from_safetensors) and the `config`
        (of `family`) it must match."""
        if weights_file is not None:
            self.family = family
            self.directory = Path(weights_file).parent
            self.config_path = Path(weights_file)
            self.config = config
            self.raw_config = family.config_to_diffusers(config)
            self.index_path = None
            if not Path(weights_file).is_file():
                fail(weights_file, None, "file not found; give a .safetensors file of Diffusers transformer weights")
            self.listing = Path(weights_file)
            self.weight_map = {name: self.listing for name in SafetensorsFile(self.listing).entries}
        else:
            self.directory = Path(directory)
            self.config_path = self.directory / CONFIG_NAME
            raw = read_json(self.config_path)
            self.family = family or family_for_class(raw.get("_class_name") if isinstance(raw, dict) else None,
                                                     self.config_path)
            self.config = self.family.config_from_diffusers(raw, self.config_path)
            self.raw_config: dict = raw
            self.index_path: Path | None = None  # set when the weights are sharded
            self.listing, self.weight_map = self._find_weights()  # listing: the index, or the single file
        self.files = {f: SafetensorsFile(f) for f in dict.fromkeys(self.weight_map.values())}
        self.keys = self.family.tensor_keys(self.config)
        self.stored_dtype = self._check()  # the one dtype of all tensors, or None when mixed

    # -- locating the tensors ------------------------------------------------------------------------
    def _find_weights(self) -> tuple[Path, dict[str, Path]]:
        listing, weight_map = weight_files(self.directory, WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "diffusers")
        if listing.name.endswith(".index.json"):
            self.index_path = listing
        return listing, weight_map

    # -- checks ----------------------------------------------------------------------------------------
    def _check(self) -> np.dtype | None:
        expected = {k.diffusers_key: k for k in self.keys}
        for name in expected:
            if name not in self.weight_map:
                fail(self.listing, name, f"missing: a {self.family.label} with this config.json "
                     f"({self.family.config_summary(self.config)}) has this tensor; the checkpoint is incomplete or does not "
                     "match its config.json")
        for path, f in self.files.items():
            listed = [n for n, p in self.weight_map.items() if p == path]
            for name in listed:
                if name not in f.entries:
                    fail(path, name, f"missing: listed in {self.index_path.name} but not in this shard; the "
                         "shard is damaged or from another checkpoint, re-download it")
            extra = [n for n in f.entries if n not in expected]
            if extra:
                more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
                fail(path, extra[0], f"unexpected tensor{more}: not part of a {self.family.label} with "
                     f"config.json's {self.family.config_summary(self.config)}; the weights do not match their config.json "
                     "(or are an image-to-video / other model)")
        seen = collections.Counter()
        for name, key in expected.items():
            path = self.weight_map[name]
            entry = self.files[path].entries[name]
            if entry.shape != key.torch_shape:
                fail(path, name, f"wrong shape {list(entry.shape)}; config.json ({self.family.config_summary(self.config)}) "
                     f"needs {list(key.torch_shape)}")
            if entry.dtype not in _FLOAT_NAMES:
                fail(path, name, f"wrong dtype {entry.dtype}; transformer weights must be F32, BF16 or F16")
            seen[entry.dtype] += 1
        # Diffusers' half-precision checkpoints are mixed (its keep-in-fp32 modules stay fp32): None then.
        return DTYPES[next(iter(seen))] if len(seen) == 1 else None

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return sum(self.files[self.weight_map[k.diffusers_key]].entries[k.diffusers_key].nbytes for k in self.keys)

    def read_leaf(self, keys: list[TensorKey], dtype: np.dtype,
                  on_tensor: Callable[[int], None] | None = None) -> np.ndarray:
        """One fvjax leaf (stacked over layers when `keys` are block tensors), in `dtype`."""
        assert np.dtype(dtype) in FLOAT_DTYPES
        first = keys[0]
        shape = ((len(keys),) if first.layer is not None else ()) + first.fvjax_shape
        buf = np.empty(shape, dtype)
        for k in keys:
            f = self.files[self.weight_map[k.diffusers_key]]
            entry = f.entries[k.diffusers_key]
            dst = buf[k.layer] if k.layer is not None else buf
            if k.transform == COPY and DTYPES[entry.dtype] == buf.dtype:
                f.read_into(k.diffusers_key, dst.reshape(entry.shape))  # straight into the leaf, no copy
            else:
                dst[...] = k.to_fvjax(f.read(k.diffusers_key))  # transpose and cast in one copy
            if on_tensor is not None:
                on_tensor(entry.nbytes)
        return buf

    def stored_leaf_dtype(self, keys: list[TensorKey]) -> np.dtype:
        """The dtype a leaf is stored in (float32 if its tensors disagree)."""
        names = {self.files[self.weight_map[k.diffusers_key]].entries[k.diffusers_key].dtype for k in keys}
        return DTYPES[names.pop()] if len(names) == 1 else np.dtype(np.float32)

    def leaves(self, dtype: np.dtype | None = None, on_tensor: Callable[[int], None] | None = None
               ) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
        """(path, array) for every fvjax leaf, in key-map order; only one leaf is built at a time.
        dtype None keeps each leaf's stored dtype (so mixed-precision checkpoints round-trip exactly)."""
        for path, keys in keys_by_leaf(self.keys).items():
            leaf_dtype = self.stored_leaf_dtype(keys) if dtype is None else np.dtype(dtype)
            yield path, self.read_leaf(keys, leaf_dtype, on_tensor)

"""Read (and write) UMT5 text-encoder weights: transformers' `UMT5EncoderModel` safetensors, single file or
sharded with `model.safetensors.index.json`, through fvjax's own safetensors reader.

Accepted paths: a Diffusers pipeline dir (its text_encoder/ is used), a text-encoder dir (config.json +
model*.safetensors), or a Hugging Face hub id found in the local cache (never downloaded). Every check
(config, missing / unexpected keys, shapes, dtypes, truncation) runs on the headers before any tensor
data is read; a defect is one `UserError` naming the file and the key.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fvjax.errors import fail
from fvjax.families.wan.text.umt5_config import UMT5Config
from fvjax.families.wan.text.umt5_keymap import EMBEDDING_KEY, TIED_EMBEDDING_KEY, keys_by_leaf, tensor_keys
from fvjax.models.keymap import leaf_shape
from fvjax.weights.dtypes import FLOAT_DTYPES, as_dtype
from fvjax.weights.paths import existing_dir, weight_files
from fvjax.weights.safetensors_io import DTYPES, SafetensorsFile, TensorSpec, write_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SUBFOLDER = "text_encoder"
_FLOAT_NAMES = ("F32", "BF16", "F16")
def text_encoder_dir(path: str | os.PathLike, where: object = "path") -> Path:
    """The directory holding the UMT5 config.json and weights that `path` names."""
    p = existing_dir(path, where, "'text_encoder/*'")
    if (p / SUBFOLDER / CONFIG_NAME).is_file():
        return p / SUBFOLDER
    if (p / CONFIG_NAME).is_file():
        return p
    fail(p, None, f"not a text encoder: no {SUBFOLDER}/{CONFIG_NAME} (Diffusers pipeline) or {CONFIG_NAME} "
         "(UMT5EncoderModel directory) in it")


class UMT5Checkpoint:
    """A UMT5EncoderModel directory: config.json + safetensors (single or sharded), checked on open."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.config = UMT5Config.from_json_file(self.directory / CONFIG_NAME)
        self.listing, self.weight_map = self._find_weights()
        self.files = {f: SafetensorsFile(f) for f in dict.fromkeys(self.weight_map.values())}
        self.keys = tensor_keys(self.config)
        self.source = self._check()  # fvjax checkpoint key -> stored key (the embedding may be the tied copy)

    def _find_weights(self) -> tuple[Path, dict[str, Path]]:
        return weight_files(self.directory, WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "transformers")

    def _check(self) -> dict[str, str]:
        expected = {k.diffusers_key: k for k in self.keys}
        source = {name: name for name in expected}
        if EMBEDDING_KEY not in self.weight_map and TIED_EMBEDDING_KEY in self.weight_map:
            source[EMBEDDING_KEY] = TIED_EMBEDDING_KEY
        allowed = set(source.values()) | {TIED_EMBEDDING_KEY}
        for name, stored in source.items():
            if stored not in self.weight_map:
                fail(self.listing, name, f"missing: a UMT5 encoder with this config.json ({self._describe()}) has "
                     "this tensor; the checkpoint is incomplete or does not match its config.json")
        for path, f in self.files.items():
            for name in (n for n, p in self.weight_map.items() if p == path):
                if name not in f.entries:
                    fail(path, name, "missing: listed in the index but not in this shard; re-download it")
            extra = [n for n in f.entries if n not in allowed]
            if extra:
                more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
                fail(path, extra[0], f"unexpected tensor{more}: not part of a UMT5 encoder with config.json's "
                     f"{self._describe()} (a decoder or another model's weights?)")
        checks = [(source[name], key.torch_shape) for name, key in expected.items()]
        if TIED_EMBEDDING_KEY in self.weight_map:
            checks.append((TIED_EMBEDDING_KEY, expected[EMBEDDING_KEY].torch_shape))
        for stored, shape in checks:
            path = self.weight_map[stored]
            entry = self.files[path].entries[stored]
            if entry.shape != shape:
                fail(path, stored, f"wrong shape {list(entry.shape)}; config.json ({self._describe()}) needs "
                     f"{list(shape)}")
            if entry.dtype not in _FLOAT_NAMES:
                fail(path, stored, f"wrong dtype {entry.dtype}; text-encoder weights must be F32, BF16 or F16")
        return source

    def _describe(self) -> str:
        c = self.config
        return (f"vocab_size={c.vocab_size}, d_model={c.d_model}, num_layers={c.num_layers}, "
                f"num_heads={c.num_heads}, d_kv={c.d_kv}, d_ff={c.d_ff}")

    def _entry(self, key: str):
        stored = self.source[key]
        f = self.files[self.weight_map[stored]]
        return f, stored, f.entries[stored]

    def leaves(self, dtype: np.dtype | None = None) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
        """(fvjax path, array) per leaf, one leaf in memory at a time; dtype None keeps the stored one
        (float32 for a leaf whose tensors disagree)."""
        for path, keys in keys_by_leaf(self.config).items():
            stored = {self._entry(k.diffusers_key)[2].dtype for k in keys}
            leaf_dtype = np.dtype(dtype) if dtype is not None else (
                DTYPES[stored.pop()] if len(stored) == 1 else np.dtype(np.float32))
            buf = np.empty(leaf_shape(keys), leaf_dtype)
            for k in keys:
                f, stored_key, entry = self._entry(k.diffusers_key)
                dst = buf[k.layer] if k.layer is not None else buf
                if k.transform == "copy" and DTYPES[entry.dtype] == leaf_dtype:
                    f.read_into(stored_key, dst.reshape(entry.shape))
                else:
                    dst[...] = k.to_fvjax(f.read(stored_key))
            yield path, buf


def load_umt5_params(path: str | os.PathLike, dtype: Any = None, *, where: object = "path"
                     ) -> tuple[UMT5Config, dict]:
    """(config, params pure dict of jax.Arrays) from a pipeline dir, a text-encoder dir or a cached hub id.
    dtype: None keeps the stored dtype; else "float32" / "bfloat16" / a dtype."""
    import jax

    from fvjax.models.params import nest

    dt = as_dtype(dtype, where="dtype")
    ckpt = UMT5Checkpoint(text_encoder_dir(path, where))
    # device_put, not jnp.asarray: that compiles a copy program per leaf shape (the leaves are fresh buffers)
    return ckpt.config, nest({p: jax.device_put(leaf) for p, leaf in ckpt.leaves(dt)})


def load_umt5(path: str | os.PathLike, dtype: Any = None, *, where: object = "path", **model_kwargs):
    """(config, UMT5Encoder) ready to call. dtype: parameter and compute dtype (None: as stored)."""
    import jax

    from fvjax.families.wan.text.umt5 import model_from_params

    config, params = load_umt5_params(path, dtype, where=where)
    param_dtype = max(jax.tree_util.tree_leaves(params), key=lambda leaf: leaf.size).dtype
    model_kwargs.setdefault("dtype", param_dtype)
    return config, model_from_params(config, params, param_dtype=param_dtype, **model_kwargs)


def save_umt5(directory: str | Path, config: UMT5Config, params: dict, dtype: Any = None) -> None:
    """Write config.json + model.safetensors that transformers' UMT5EncoderModel.from_pretrained loads
    (atomically: a new directory). dtype None keeps each leaf's dtype."""
    from fvjax.io.atomic import atomic_directory
    from fvjax.models.params import flatten

    dt = as_dtype(dtype, where="dtype")
    flat = flatten(params)
    by_name = {k.diffusers_key: k for k in tensor_keys(config)}

    def host(key) -> np.ndarray:
        leaf = np.asarray(flat[key.path])
        row = leaf[key.layer] if key.layer is not None else leaf
        out = key.to_diffusers(row)
        return out.astype(dt) if dt is not None else out

    specs = []
    for name, key in by_name.items():
        leaf_dtype = dt if dt is not None else np.asarray(flat[key.path]).dtype
        assert np.dtype(leaf_dtype) in FLOAT_DTYPES, leaf_dtype
        specs.append(TensorSpec(name, np.dtype(leaf_dtype), key.torch_shape))
    with atomic_directory(directory, where="directory") as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_hf_config(), indent=2) + "\n", encoding="utf-8")
        write_safetensors(tmp / WEIGHTS_NAME, specs, lambda name: host(by_name[name]),
                          metadata={"format": "pt"})

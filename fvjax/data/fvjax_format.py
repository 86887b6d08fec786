"""fvjax's own dataset format: plain .npy shards, memory-mapped, described by a manifest.

Layout of a dataset directory (version 1):

    DIR/manifest.json
        {"format": "fvjax-latents", "version": 1, "num_samples": N,
         "latent_shape": [16, T, H, W], "text_dim": D,
         "shards": [{"name": "shard-00000", "num_samples": n0}, ...]}
    DIR/shard-00000.latents.npy       float32 (or bfloat16/float16) [n0, 16, T, H, W]
    DIR/shard-00000.text.npy          float32 (or bfloat16/float16) [K0, D]: the valid (unpadded) text
                                      tokens of the shard's samples, concatenated
    DIR/shard-00000.text_offsets.npy  int64 [n0 + 1]: sample i's tokens are text[offsets[i]:offsets[i+1]]
    DIR/shard-00000.meta.jsonl        optional, one {"id": ..., "caption": ...} per sample (not read
                                      for training)

Samples are numbered shard after shard. Every sample of a dataset has the same latent shape (batches
need it); text lengths vary and are padded to 512 (with a mask) by the pipeline. Arrays are opened
with np.load(mmap_mode="r"), so opening costs nothing and a read touches only that sample's bytes.
Writers write into `DIR.tmp-<pid>` and rename it to DIR at the end, so a dataset is complete or absent.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Iterator

import ml_dtypes
import numpy as np

from fvjax.data.sample import RawSample
from fvjax.io.atomic import atomic_directory
from fvjax.errors import UserError

FORMAT_NAME = "fvjax-latents"
VERSION = 1
_STORABLE = {np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)}


class FvjaxSource:
    format = "fvjax"
    has_latents = True

    def __init__(self, path: str):
        self.path = path
        manifest_path = os.path.join(path, "manifest.json")
        try:
            with open(manifest_path) as f:
                manifest = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(manifest_path, None, f"cannot read the dataset manifest: {err}")
        self.manifest = manifest

        def need(key, kind):
            if not isinstance(manifest.get(key), kind):
                raise UserError(manifest_path, key, f"missing or not a {kind.__name__}")
            return manifest[key]

        if manifest.get("format") != FORMAT_NAME or manifest.get("version") != VERSION:
            raise UserError(manifest_path, "format", f"expected format {FORMAT_NAME!r} version {VERSION}, "
                                                     f"got {manifest.get('format')!r} {manifest.get('version')!r}")
        self.latent_shape = tuple(need("latent_shape", list))
        self.text_dim = need("text_dim", int)
        shards = need("shards", list)
        if not shards:
            raise UserError(manifest_path, "shards", "the dataset has no shards (no samples)")
        self._latents, self._text, self._offsets, self._starts = [], [], [], []
        total = 0
        for i, shard in enumerate(shards):
            name, n = shard.get("name"), shard.get("num_samples")
            if not isinstance(name, str) or not isinstance(n, int) or n <= 0:
                raise UserError(manifest_path, f"shards[{i}]", "each shard needs a name and num_samples > 0")
            latents = self._open(f"{name}.latents.npy", (n,) + self.latent_shape, "latents")
            text = self._open(f"{name}.text.npy", None, "text")
            offsets = self._open(f"{name}.text_offsets.npy", (n + 1,), "text_offsets")
            where = os.path.join(path, f"{name}.text.npy")
            if text.ndim != 2 or text.shape[1] != self.text_dim:
                raise UserError(where, "text", f"expected [tokens, {self.text_dim}], got {list(text.shape)}")
            if offsets[0] != 0 or offsets[-1] != text.shape[0] or np.any(np.diff(offsets) < 0):
                raise UserError(os.path.join(path, f"{name}.text_offsets.npy"), "text_offsets",
                                f"offsets must rise from 0 to the token count {text.shape[0]}")
            self._latents.append(latents)
            self._text.append(text)
            self._offsets.append(np.asarray(offsets))
            self._starts.append(total)
            total += n
        if manifest.get("num_samples") != total:
            raise UserError(manifest_path, "num_samples", f"says {manifest.get('num_samples')} but the shards hold {total}")
        self._len = total
        self._shard_names = [s["name"] for s in shards]

    def _open(self, filename: str, shape, key: str) -> np.ndarray:
        file = os.path.join(self.path, filename)
        try:
            arr = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise UserError(file, key, f"cannot open shard array: {err}")
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise UserError(file, key, f"expected shape {list(shape)}, got {list(arr.shape)}")
        if key != "text_offsets" and arr.dtype not in _STORABLE:
            raise UserError(file, key, f"dtype {arr.dtype} is not one of float32, float16, bfloat16")
        return arr

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> RawSample:
        if not 0 <= index < self._len:
            raise IndexError(index)
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        local = index - self._starts[shard]
        begin, end = self._offsets[shard][local], self._offsets[shard][local + 1]
        return RawSample(latents=np.asarray(self._latents[shard][local], dtype=np.float32),
                         text_embeds=np.asarray(self._text[shard][begin:end], dtype=np.float32),
                         where=os.path.join(self.path, f"{self._shard_names[shard]}.latents.npy") + f"[{local}]")

    @property
    def fingerprint(self) -> dict:
        return {"format": self.format, "num_samples": self._len, "latent_shape": list(self.latent_shape),
                "text_dim": self.text_dim, "shards": self._shard_names}


def write_fvjax_dataset(out_dir: str, samples: Iterable[dict], samples_per_shard: int = 256) -> str:
    """Write samples ({"latents": [16,T,H,W], "text_embeds": [L, D], optional "id", "caption"}) as an
    fvjax dataset at out_dir (which must not exist yet). Returns out_dir."""
    with atomic_directory(out_dir, where="--out") as tmp:
        shards, latent_shape, text_dim, total = [], None, None, 0
        for chunk in _chunks(iter(samples), samples_per_shard):
            name = f"shard-{len(shards):05d}"
            latents = np.stack([np.asarray(s["latents"], np.float32) for s in chunk])
            texts = [np.asarray(s["text_embeds"], np.float32) for s in chunk]
            if latent_shape is None:
                latent_shape, text_dim = list(latents.shape[1:]), int(texts[0].shape[1])
            if list(latents.shape[1:]) != latent_shape or any(t.ndim != 2 or t.shape[1] != text_dim for t in texts):
                raise UserError(out_dir, "samples", "all samples need the same latent shape and text dim")
            offsets = np.concatenate([[0], np.cumsum([t.shape[0] for t in texts])]).astype(np.int64)
            np.save(os.path.join(tmp, f"{name}.latents.npy"), latents)
            np.save(os.path.join(tmp, f"{name}.text.npy"), np.concatenate(texts, axis=0))
            np.save(os.path.join(tmp, f"{name}.text_offsets.npy"), offsets)
            with open(os.path.join(tmp, f"{name}.meta.jsonl"), "w") as f:
                for j, s in enumerate(chunk):
                    f.write(json.dumps({"id": s.get("id", str(total + j)), "caption": s.get("caption", "")}) + "\n")
            shards.append({"name": name, "num_samples": len(chunk)})
            total += len(chunk)
        if not shards:
            raise UserError(out_dir, "samples", "no samples to write")
        manifest = {"format": FORMAT_NAME, "version": VERSION, "num_samples": total, "latent_shape": latent_shape,
                    "text_dim": text_dim, "shards": shards}
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
    return out_dir


def _chunks(it: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in it:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

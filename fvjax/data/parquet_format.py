"""FastVideo's preprocessed parquet datasets (spec §5.4), read as a random-access source.

Two schemas:
- t2v: vae_latent_bytes / vae_latent_shape ([C, T, H, W]) and text_embedding_bytes /
  text_embedding_shape ([L_valid, D], padding stripped), plus metadata columns (id, file_name, caption,
  media_type, width, height, num_frames, duration_sec, fps) not needed for training;
- text_only (FastVideo's `--preprocess_task text_only`): id, text_embedding_{bytes,shape,dtype} and
  caption only; the embedding is stored already zero-padded ([512, 4096] for Wan), so the training mask
  is all ones over it, padding included, as in FastVideo. Such a source has no latents
  (`has_latents` False; samples' latents are None), for methods that read text only.
A file is text-only when it has no vae_latent_bytes column; a dataset must be one kind or the other.
As FastVideo's loader does, the bytes are always decoded as float32 whatever the *_dtype columns say
(FastVideo's writers store float32).

Files are found recursively under the path and sorted by name (as FastVideo), samples numbered file
after file. A sample read decodes its whole row group, like FastVideo's map-style loader; the last few
row groups are cached, so files written with small row groups (or read in order) are cheap.
"""
from __future__ import annotations

import collections
import os
import threading
from typing import Iterable

import ml_dtypes
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fvjax.data.sample import FLAG, RawSample
from fvjax.io.atomic import atomic_directory
from fvjax.errors import UserError

TEXT_COLUMNS = ("text_embedding_bytes", "text_embedding_shape")
LATENT_COLUMNS = ("vae_latent_bytes", "vae_latent_shape")
REQUIRED_COLUMNS = LATENT_COLUMNS + TEXT_COLUMNS   # t2v; text_only: TEXT_COLUMNS

SCHEMA_T2V = pa.schema([
    pa.field("id", pa.string()),
    pa.field("vae_latent_bytes", pa.binary()),
    pa.field("vae_latent_shape", pa.list_(pa.int64())),
    pa.field("vae_latent_dtype", pa.string()),
    pa.field("text_embedding_bytes", pa.binary()),
    pa.field("text_embedding_shape", pa.list_(pa.int64())),
    pa.field("text_embedding_dtype", pa.string()),
    pa.field("file_name", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("media_type", pa.string()),
    pa.field("width", pa.int64()),
    pa.field("height", pa.int64()),
    pa.field("num_frames", pa.int64()),
    pa.field("duration_sec", pa.float64()),
    pa.field("fps", pa.float64()),
])

SCHEMA_TEXT_ONLY = pa.schema([
    pa.field("id", pa.string()),
    pa.field("text_embedding_bytes", pa.binary()),
    pa.field("text_embedding_shape", pa.list_(pa.int64())),
    pa.field("text_embedding_dtype", pa.string()),
    pa.field("caption", pa.string()),
])


def file_has_latents(file: str, names: set[str]) -> bool:
    """Whether a parquet file with these columns is t2v (True) or text_only (False); UserError if neither."""
    for col in TEXT_COLUMNS:
        if col not in names:
            raise UserError(file, col, f"missing column; FastVideo's t2v schema needs {', '.join(REQUIRED_COLUMNS)} "
                                       f"and its text_only schema {', '.join(TEXT_COLUMNS)}")
    present = [col in names for col in LATENT_COLUMNS]
    if any(present) and not all(present):
        raise UserError(file, LATENT_COLUMNS[present.index(False)], f"missing column; FastVideo's t2v schema needs "
                                                                   f"{', '.join(REQUIRED_COLUMNS)}")
    return all(present)


def find_parquet_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    files = [os.path.join(root, f) for root, _, names in os.walk(path) for f in names if f.endswith(".parquet")]
    if not files:
        raise UserError(path, FLAG, "no .parquet files under this directory")
    return sorted(files)


class ParquetSource:
    format = "parquet"

    def __init__(self, path: str, cached_row_groups: int = 4):
        self.path = path
        self.files = find_parquet_files(path)
        # Global sample index -> (file, row group, row) through cumulative row counts.
        self._groups: list[tuple[int, int]] = []   # (file index, row group index)
        starts, total, self._file_starts = [], 0, []
        self._dtype_columns: list[tuple[str, ...]] = []   # per file: the *_dtype columns it has
        for fi, file in enumerate(self.files):
            self._file_starts.append(total)
            try:
                parquet_file = pq.ParquetFile(file)
                meta, names = parquet_file.metadata, set(parquet_file.schema_arrow.names)
            except (OSError, pa.ArrowException) as err:
                raise UserError(file, None, f"cannot read parquet file: {err}")
            has_latents = file_has_latents(file, names)
            self._dtype_columns.append(tuple(c for c in ("vae_latent_dtype", "text_embedding_dtype") if c in names))
            if fi == 0:
                self.has_latents = has_latents
            elif has_latents != self.has_latents:
                kinds = ("text only (no vae_latent_bytes column)", "latents and text")
                raise UserError(file, FLAG, f"holds {kinds[has_latents]} but {self.files[0]} holds "
                                            f"{kinds[self.has_latents]}; a dataset is one kind or the other")
            for rg in range(meta.num_row_groups):
                rows = meta.row_group(rg).num_rows
                if rows:
                    self._groups.append((fi, rg))
                    starts.append(total)
                    total += rows
        if total == 0:
            raise UserError(path, FLAG, "the parquet files hold no rows")
        self._starts = np.asarray(starts, np.int64)
        self._len = total
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cache_size = cached_row_groups
        self._columns = REQUIRED_COLUMNS if self.has_latents else TEXT_COLUMNS
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._len

    def _row_group(self, g: int) -> dict:
        with self._lock:
            if g in self._cache:
                self._cache.move_to_end(g)
                return self._cache[g]
        fi, rg = self._groups[g]
        names = list(self._columns) + [c for c in self._dtype_columns[fi]
                                       if self.has_latents or not c.startswith("vae_")]
        table = pq.ParquetFile(self.files[fi]).read_row_group(rg, columns=names)
        columns = {name: table.column(name).to_pylist() for name in names}
        with self._lock:
            self._cache[g] = columns
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return columns

    def __getitem__(self, index: int) -> RawSample:
        if not 0 <= index < self._len:
            raise IndexError(index)
        g = int(np.searchsorted(self._starts, index, side="right")) - 1
        row = index - int(self._starts[g])
        cols = self._row_group(g)
        fi = self._groups[g][0]
        where = f"{self.files[fi]} (row {index - self._file_starts[fi]})"
        def decode(column: str):
            dtype = cols[f"{column}_dtype"][row] if f"{column}_dtype" in cols else None
            return _decode(cols[f"{column}_bytes"][row], cols[f"{column}_shape"][row], where, column, dtype)

        latents = decode("vae_latent") if self.has_latents else None
        text = decode("text_embedding")
        return RawSample(latents=latents, text_embeds=text, where=where)

    @property
    def fingerprint(self) -> dict:
        out = {"format": self.format, "num_samples": self._len,
               "files": [os.path.relpath(f, self.path) if os.path.isdir(self.path) else os.path.basename(f)
                         for f in self.files]}
        if not self.has_latents:
            out["kind"] = "text_only"
        return out


# Narrower float dtypes a *_dtype column may name (FastVideo's writers put str(array.dtype) there).
NARROW_FLOATS = {"float16": np.float16, "half": np.float16, "bfloat16": "bfloat16", "float64": np.float64,
                 "double": np.float64}


def _decode(data, shape, where: str, column: str, dtype_name: str | None = None) -> np.ndarray:
    """float32, as FastVideo's loader decodes every tensor; a *_dtype column naming a narrower (or wider)
    float whose byte count fits that dtype instead is decoded as that dtype (FastVideo would misread it)."""
    if data is None or shape is None:
        raise UserError(where, f"{column}_bytes", "is null")
    shape = [int(s) for s in shape]
    count = int(np.prod(shape)) if shape else 1
    if len(data) == 4 * count:
        return np.frombuffer(data, dtype=np.float32).reshape(shape).copy()
    name = str(dtype_name or "").lower().removeprefix("torch.")
    if name in NARROW_FLOATS:
        dtype = np.dtype(ml_dtypes.bfloat16 if NARROW_FLOATS[name] == "bfloat16" else NARROW_FLOATS[name])
        if len(data) == dtype.itemsize * count:
            return np.frombuffer(data, dtype=dtype).astype(np.float32).reshape(shape)
    said = f" ({column}_dtype says {dtype_name!r})" if dtype_name else ""
    raise UserError(where, f"{column}_shape", f"{len(data)} bytes do not hold float32 data of shape {shape} "
                                              f"({4 * count} bytes){said}; FastVideo stores float32")


def write_parquet_dataset(out_dir: str, samples: Iterable[dict], samples_per_file: int = 64,
                          row_group_size: int = 8) -> str:
    """Write samples ({"latents", "text_embeds", optional "id", "caption"}) in FastVideo's t2v parquet
    schema (float32 bytes) into out_dir (which must not exist yet). Returns out_dir."""
    with atomic_directory(out_dir, where="--out") as tmp:
        rows, n_files, total = [], 0, 0

        def flush():
            nonlocal rows, n_files
            table = pa.Table.from_pylist(rows, schema=SCHEMA_T2V)
            pq.write_table(table, os.path.join(tmp, f"data-chunk-{n_files:05d}.parquet"), row_group_size=row_group_size)
            rows, n_files = [], n_files + 1

        for s in samples:
            lat = np.ascontiguousarray(s["latents"], np.float32)
            txt = np.ascontiguousarray(s["text_embeds"], np.float32)
            rows.append({
                "id": str(s.get("id", total)), "vae_latent_bytes": lat.tobytes(), "vae_latent_shape": list(lat.shape),
                "vae_latent_dtype": "float32", "text_embedding_bytes": txt.tobytes(),
                "text_embedding_shape": list(txt.shape), "text_embedding_dtype": "float32",
                "file_name": f"{s.get('id', total)}.mp4", "caption": s.get("caption", ""), "media_type": "video",
                "width": int(lat.shape[-1] * 8), "height": int(lat.shape[-2] * 8),
                "num_frames": int((lat.shape[1] - 1) * 4 + 1), "duration_sec": float(((lat.shape[1] - 1) * 4 + 1) / 16),
                "fps": 16.0})
            total += 1
            if len(rows) == samples_per_file:
                flush()
        if rows:
            flush()
        if total == 0:
            raise UserError(out_dir, "samples", "no samples to write")
    return out_dir

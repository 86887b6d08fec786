"""Random-access sources of preprocessed samples, one per on-disk format, chosen automatically.

A source is a sequence of `RawSample`s (sample.py: latents [C, T, H, W], or None in text-only data, and
the valid text tokens [L, D], both float32) with a `fingerprint` that identifies the data for resume
checks. `open_source(data_path)` picks, for each dataset root:
- fvjax's own format when `path/manifest.json` exists (see fvjax/data/fvjax_format.py);
- FastVideo's parquet (t2v or text_only) when `path` is a .parquet file or a directory holding .parquet
  files (searched recursively, e.g. FastVideo's `combined_parquet_dataset/`; see
  fvjax/data/parquet_format.py).
A multi-dataset data_path (fvjax/schema/data_path.py: "a:2,b:1", a list, a mapping) gives a
`ConcatSource`: each root's samples `repeat` times, roots in path order (the same root's copies
adjacent), as FastVideo, which appends each root's file list `repeat` times and sorts the union by path;
so an epoch (one pass over the permutation of all of them) sees a dataset with repeat 2 twice. Formats
may be mixed; kinds (latents or text only) may not.
"""
from __future__ import annotations

import os

import numpy as np

from fvjax.data.fvjax_format import FvjaxSource
from fvjax.data.parquet_format import ParquetSource, file_has_latents
from fvjax.data.sample import FLAG, RawSample, Source
from fvjax.errors import UserError
from fvjax.schema.data_path import DataPath, DataPaths, data_specs


def detect_format(path: str) -> str:
    """'fvjax' or 'parquet'; UserError for a missing path, an empty directory or anything else."""
    if not os.path.exists(path):
        raise UserError(path, FLAG, "the dataset path does not exist")
    if os.path.isfile(path):
        if path.endswith(".parquet"):
            return "parquet"
        if os.path.basename(path) == "manifest.json":
            return "fvjax"
        raise UserError(path, FLAG, "unknown dataset format: expected a directory with manifest.json "
                                    "(fvjax) or .parquet files (FastVideo)")
    if os.path.exists(os.path.join(path, "manifest.json")):
        return "fvjax"
    for _, _, files in os.walk(path):
        if any(f.endswith(".parquet") for f in files):
            return "parquet"
    if not any(os.scandir(path)):
        raise UserError(path, FLAG, "the dataset directory is empty; write one with `python -m fvjax.data.synthetic` "
                                    "or preprocess videos first")
    raise UserError(path, FLAG, "unknown dataset format: no manifest.json (fvjax format) and no .parquet files "
                                "(FastVideo format) in this directory")


def _open_root(path: str) -> Source:
    path = os.path.expanduser(os.fspath(path))
    fmt = detect_format(path)
    if fmt == "fvjax":
        return FvjaxSource(os.path.dirname(path) if os.path.isfile(path) else path)
    return ParquetSource(path)


def open_source(data_path: DataPath | os.PathLike) -> Source:
    """The source of a normalised training.data_path: one root (a path) or (path, repeat) pairs."""
    if isinstance(data_path, (str, os.PathLike)):
        return _open_root(data_path)
    specs = data_specs(data_path)
    if not specs:
        raise UserError(str(data_path), FLAG, "names no dataset")
    opened: dict[str, Source] = {}
    parts = []
    for root, repeat in specs:
        real = os.path.realpath(os.path.expanduser(root))
        if real not in opened:
            opened[real] = _open_root(root)
        parts.append((real, opened[real], repeat))
    parts.sort(key=lambda part: part[0])   # stable: a root named twice keeps its copies together
    return ConcatSource([(source, repeat) for _, source, repeat in parts], str(DataPaths(specs)))


class ConcatSource:
    """Several sources, each `repeat` times, numbered one after the other."""

    def __init__(self, parts: list[tuple[Source, int]], path: str):
        self.path = path
        self.parts = parts
        kinds = {getattr(source, "has_latents", True): source for source, _ in parts}
        if len(kinds) > 1:
            raise UserError(path, FLAG, f"{kinds[False].path} holds text embeddings only but {kinds[True].path} "
                                        "holds latents; the datasets of one run must be the same kind")
        self.has_latents = next(iter(kinds))
        formats = {source.format for source, _ in parts}
        self.format = formats.pop() if len(formats) == 1 else "mixed"
        self._expanded = [source for source, repeat in parts for _ in range(repeat)]
        self._starts = np.cumsum([0] + [len(source) for source in self._expanded])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> RawSample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._expanded[part][index - int(self._starts[part])]

    @property
    def fingerprint(self) -> dict:
        return {"format": "multi", "num_samples": len(self),
                "sources": [{"repeat": repeat, **source.fingerprint} for source, repeat in self.parts]}


def dataset_has_latents(path: str) -> bool | None:
    """Whether the dataset at `path` holds latents (True) or text embeddings only (False), from its manifest
    or its first parquet file's schema; None when that cannot be told cheaply (missing, empty, unknown
    format, unreadable): opening it then says why."""
    path = os.path.expanduser(path)
    try:
        if detect_format(path) == "fvjax":
            return True
    except UserError:
        return None
    first = path if os.path.isfile(path) else None
    for root, dirs, files in os.walk(path):
        dirs.sort()
        names = sorted(f for f in files if f.endswith(".parquet"))
        if names:
            first = os.path.join(root, names[0])
            break
    if first is None:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        return file_has_latents(first, set(pq.read_schema(first).names))
    except (OSError, pa.ArrowException, UserError):
        return None

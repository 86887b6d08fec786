"""Random-access sources of preprocessed samples, one per on-disk format, chosen automatically.

A source is a sequence of `RawSample`s (sample.py: latents [C, T, H, W] and the valid text tokens [L, D],
both float32) with a `fingerprint` that identifies the data for resume checks. `open_source(path)` picks:
- fvjax's own format when `path/manifest.json` exists (see fvjax/data/fvjax_format.py);
- FastVideo's parquet when `path` is a .parquet file or a directory holding .parquet files (searched
  recursively, e.g. FastVideo's `combined_parquet_dataset/`; see fvjax/data/parquet_format.py).
"""
from __future__ import annotations

import os

from fvjax.data.fvjax_format import FvjaxSource
from fvjax.data.parquet_format import ParquetSource
from fvjax.data.sample import FLAG, Source
from fvjax.errors import UserError


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


def open_source(path: str) -> Source:
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "fvjax":
        return FvjaxSource(os.path.dirname(path) if os.path.isfile(path) else path)
    return ParquetSource(path)

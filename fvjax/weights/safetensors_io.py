"""Safetensors read tensor by tensor into caller-owned buffers, and written tensor by tensor (in any order).

Our own small reader rather than `safe_open`: it reads with plain file reads straight into the numpy
buffer the caller provides, so nothing is memory-mapped (mapped pages would count in RSS and double the
peak of a conversion), bf16 works through ml_dtypes, and every defect of the file (truncated, corrupt
header, inconsistent offsets) becomes a `UserError` naming the file and the tensor.

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}} with an
optional "__metadata__" entry, then the data; offsets are relative to the end of the header.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from pathlib import Path
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

from fvjax.errors import fail

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "I16": np.dtype(np.int16), "U16": np.dtype(np.uint16), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I32": np.dtype(np.int32), "U32": np.dtype(np.uint32),
    "F32": np.dtype(np.float32), "F64": np.dtype(np.float64), "I64": np.dtype(np.int64),
    "U64": np.dtype(np.uint64),
}
# The order of the safetensors library's dtype enum: it writes larger dtypes first, then by name, so a
# file we write has the same layout (and bytes) as one written by `safetensors.torch.save_file`.
_DTYPE_RANK = {name: rank for rank, name in enumerate(
    ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64",
     "I64", "U64"])}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_READ_CHUNK = 1 << 30  # one read() call is capped near 2 GiB on Linux


def dtype_name(dtype: np.dtype) -> str:
    for name, dt in DTYPES.items():
        if dt == np.dtype(dtype):
            return name
    raise ValueError(f"no safetensors dtype for {dtype}")


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class SafetensorsFile:
    """Header of one safetensors file (parsed and checked on construction); tensors read on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            fail(self.path, None, "file not found")
        self.entries, self.metadata = self._parse_header()

    def _corrupt(self, key: str | None, what: str):
        fail(self.path, key, f"corrupt safetensors header: {what}; the file is damaged, re-download or re-export it")

    def _parse_header(self) -> tuple[dict[str, TensorEntry], dict]:
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                fail(self.path, None, f"truncated: {self.size} bytes, shorter than the 8-byte header length; "
                     "re-download or re-export it")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER:
                self._corrupt(None, f"header length {n} is implausible")
            if 8 + n > self.size:
                fail(self.path, None, f"truncated or corrupt: header length {n} runs past the end of the "
                     f"{self.size}-byte file; re-download or re-export it")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._corrupt(None, f"not valid JSON ({e})")
        if not isinstance(header, dict):
            self._corrupt(None, "not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        data_start = 8 + n
        entries: dict[str, TensorEntry] = {}
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
                shape = tuple(int(s) for s in shape)
                begin, end = int(begin), int(end)
            except (TypeError, KeyError, ValueError):
                self._corrupt(name, "entry lacks dtype / shape / data_offsets")
            if dtype not in DTYPES:
                self._corrupt(name, f"unknown dtype {dtype!r}")
            if min(shape, default=0) < 0 or not 0 <= begin <= end:
                self._corrupt(name, f"bad shape {list(shape)} or data_offsets [{begin}, {end}]")
            if end - begin != math.prod(shape) * DTYPES[dtype].itemsize:
                self._corrupt(name, f"data_offsets [{begin}, {end}] do not hold a {dtype} tensor of shape "
                              f"{list(shape)}")
            entries[name] = TensorEntry(name, dtype, shape, data_start + begin, data_start + end)
        beyond = [e for e in entries.values() if e.end > self.size]
        if beyond:
            first = min(beyond, key=lambda e: e.start)
            fail(self.path, first.name, f"truncated: the tensor needs bytes up to {first.end} but the file has "
                 f"only {self.size} ({len(beyond)} tensor(s) cut off); the download or copy was interrupted, "
                 "re-download or re-export it")
        return entries, metadata

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray:
        """Read tensor `name` into `out` (C-contiguous, the tensor's own dtype and size)."""
        entry = self.entries[name]
        assert out.flags.c_contiguous and out.dtype == DTYPES[entry.dtype] and out.nbytes == entry.nbytes
        view = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as f:
            f.seek(entry.start)
            done = 0
            while done < entry.nbytes:
                got = f.readinto(view[done:done + _READ_CHUNK])
                if not got:
                    fail(self.path, name, f"truncated: the file ended after {entry.start + done} bytes while "
                         f"reading this tensor; re-download or re-export it")
                done += got
        return out

    def read(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        return self.read_into(name, np.empty(entry.shape, DTYPES[entry.dtype]))


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


class SafetensorsWriter:
    """A new safetensors file whose tensors may be written in any order: the header, written first, fixes
    every tensor's offset, so a caller can write tensors as its data comes (e.g. leaf by leaf) while the
    file keeps the standard order.

    Layout (order, JSON formatting, padding) follows the safetensors library, so the bytes equal those
    of `safetensors.torch.save_file` for the same tensors and metadata. Use as a context manager; the
    file is complete (every tensor written, flushed and fsynced) only when the block exits normally.
    """

    def __init__(self, path: str | Path, specs: Iterable[TensorSpec], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.ordered = sorted(specs, key=lambda s: (-_DTYPE_RANK[dtype_name(s.dtype)], s.name))
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        for s in self.ordered:
            header[s.name] = {"dtype": dtype_name(s.dtype), "shape": list(s.shape),
                              "data_offsets": [offset, offset + s.nbytes]}
            offset += s.nbytes
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        data_start = 8 + len(raw)
        self._slots = {s.name: (s, data_start + header[s.name]["data_offsets"][0]) for s in self.ordered}
        self._pending = set(self._slots)
        self._file = open(self.path, "wb")
        self._file.write(struct.pack("<Q", len(raw)))
        self._file.write(raw)

    def write(self, name: str, arr: np.ndarray) -> None:
        spec, offset = self._slots[name]
        if arr.shape != spec.shape or arr.dtype != np.dtype(spec.dtype):
            raise ValueError(f"{name}: got {arr.dtype}{arr.shape}, announced {spec.dtype}{spec.shape}")
        self._file.seek(offset)
        self._file.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
        self._pending.discard(name)

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self._pending:
                    raise ValueError(f"{self.path}: {len(self._pending)} tensor(s) never written, e.g. "
                                     f"{min(self._pending)}")
                self._file.flush()
                os.fsync(self._file.fileno())
        finally:
            self._file.close()


def write_safetensors(path: str | Path, specs: Iterable[TensorSpec], produce: Callable[[str], np.ndarray],
                      metadata: dict[str, str] | None = None, on_tensor: Callable[[int], None] | None = None) -> None:
    """Write a safetensors file calling `produce(name)` once per tensor, in file order, so only one tensor
    is in memory."""
    with SafetensorsWriter(path, specs, metadata) as writer:
        for s in writer.ordered:
            writer.write(s.name, produce(s.name))  # no reference kept: freed before the next produce()
            if on_tensor is not None:
                on_tensor(s.nbytes)

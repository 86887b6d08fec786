"""Checksums of a saved directory (a training checkpoint, an fvjax weights directory's params/).

A JSON list `fvjax_checksums.json` at the top of the directory gives, for every file under it, its size and
the CRC-32 (zlib, stdlib) of each 64 MiB block. `verify` re-reads the files and names the first that is
missing, of another size (truncated), or whose bytes differ (zeroed, bit-flipped). Blocks are read and
hashed on a thread pool (file reads and zlib.crc32 release the GIL), so a multi-GB checkpoint is checked
at several GB/s; with several JAX processes each reads only its share of the blocks and the verdicts are
combined (every process must call `verify` then, as with any collective).

Files a later step rewrites (orbax's step metadata, written again at commit) are listed by name only: they
must exist, their bytes are not checked.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

LIST_NAME = "fvjax_checksums.json"
FORMAT = "fvjax-checksums"
VERSION = 1
ALGORITHM = "crc32"
BLOCK = 64 << 20     # bytes per checksum: the unit of parallel work
_CHUNK = 1 << 20      # bytes per read (measured: 128 KiB - 8 MiB all hash at the speed of crc32 alone)
_THREADS = max(1, min(16, os.cpu_count() or 1))
_local = threading.local()


class Corrupt(Exception):
    """`path` (relative to the checked directory) fails its checksum list: `reason` says how."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def _buffer() -> memoryview:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(_CHUNK))
    return buf


def _block_crc(path: str, start: int, length: int) -> int:
    buf, crc = _buffer(), 0
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < length:
            n = os.preadv(fd, [buf[:min(_CHUNK, length - done)]], start + done)
            if n <= 0:
                return -1   # shorter than listed (changed under us): cannot match
            crc = zlib.crc32(buf[:n], crc)
            done += n
    finally:
        os.close(fd)
    return crc


def _blocks(size: int) -> list[tuple[int, int]]:
    return [(start, min(BLOCK, size - start)) for start in range(0, size, BLOCK)] or [(0, 0)]


def _walk(directory: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), directory).replace(os.sep, "/")
            if rel != LIST_NAME:
                out.append(rel)
    return sorted(out)


def _map(fn, items: list) -> list:
    if len(items) <= 1:
        return [fn(*item) for item in items]
    with ThreadPoolExecutor(min(_THREADS, len(items))) as pool:
        return list(pool.map(lambda item: fn(*item), items))


def compute(directory: str, names_only: Iterable[str] = ()) -> dict:
    """The checksum list of every file under `directory` (`names_only`: relative paths listed by name)."""
    directory = os.fspath(directory)
    names_only = set(names_only)
    files = [rel for rel in _walk(directory) if rel not in names_only]
    sizes = {rel: os.path.getsize(os.path.join(directory, rel)) for rel in files}
    units = [(rel, start, length) for rel in files for start, length in _blocks(sizes[rel])]
    crcs = _map(lambda rel, start, length: _block_crc(os.path.join(directory, rel), start, length), units)
    listed: dict[str, dict] = {rel: {"size": sizes[rel], ALGORITHM: []} for rel in files}
    for (rel, _, _), crc in zip(units, crcs):
        listed[rel][ALGORITHM].append(crc)
    for rel in sorted(names_only):
        if os.path.isfile(os.path.join(directory, rel)):
            listed[rel] = {}
    return {"format": FORMAT, "version": VERSION, "algorithm": ALGORITHM, "block_bytes": BLOCK,
            "files": dict(sorted(listed.items()))}


def write(directory: str, names_only: Iterable[str] = ()) -> None:
    """Compute and write `directory`'s checksum list (atomically: a reader sees all of it or none)."""
    listing = compute(directory, names_only)
    path = os.path.join(os.fspath(directory), LIST_NAME)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(listing, f, separators=(",", ":"))
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def has_list(directory: str) -> bool:
    return os.path.isfile(os.path.join(os.fspath(directory), LIST_NAME))


def _read_list(directory: str) -> dict:
    path = os.path.join(directory, LIST_NAME)
    try:
        with open(path, "rb") as f:
            listing = json.loads(f.read())
        files = listing["files"]
        ok = (listing.get("format") == FORMAT and listing.get("algorithm") == ALGORITHM
              and isinstance(listing.get("block_bytes"), int) and listing["block_bytes"] > 0
              and isinstance(files, dict) and all(isinstance(v, dict) for v in files.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise Corrupt(LIST_NAME, f"unreadable checksum list ({type(err).__name__})") from None
    if not ok:
        raise Corrupt(LIST_NAME, "not an fvjax checksum list (damaged)")
    return listing


def _missing(directory: str, rel: str) -> Corrupt:
    """The highest missing folder of `rel` (`state/: missing`), or the file itself."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        if not os.path.isdir(os.path.join(directory, *parts[:i])):
            return Corrupt("/".join(parts[:i]) + "/", "missing")
    return Corrupt(rel, "missing")


def verify(directory: str) -> bool:
    """True when `directory` matches its checksum list; False when it has none (unverified: written by an
    older fvjax, or interrupted before the list); raises Corrupt naming the first bad file."""
    directory = os.fspath(directory)
    if not has_list(directory):
        return False
    listing = _read_list(directory)
    block = listing["block_bytes"]
    units = []
    for rel, entry in sorted(listing["files"].items()):
        path = os.path.join(directory, rel)
        try:
            size = os.stat(path).st_size if os.path.isfile(path) else None
        except OSError:
            size = None
        if size is None:
            raise _missing(directory, rel)
        if "size" not in entry:
            continue   # listed by name only
        want = entry["size"]
        crcs = entry.get(ALGORITHM)
        if not isinstance(want, int) or not isinstance(crcs, list):
            raise Corrupt(LIST_NAME, f"entry {rel} is damaged")
        if size != want:
            raise Corrupt(rel, f"truncated ({size} of {want} bytes)" if size < want
                          else f"{size} bytes, {want} expected")
        starts = list(range(0, want, block)) or [0]
        if len(crcs) != len(starts):
            raise Corrupt(LIST_NAME, f"entry {rel} is damaged")
        units += [(rel, start, min(block, want - start), crc) for start, crc in zip(starts, crcs)]
    index, count = _process_share()
    mine = [(i, u) for i, u in enumerate(units) if i % count == index]
    bad = [i for i, ok in zip([i for i, _ in mine], _map(
        lambda i, u: _block_crc(os.path.join(directory, u[0]), u[1], u[2]) == u[3], mine)) if not ok]
    first = _first_everywhere(min(bad, default=len(units)), count)
    if first < len(units):
        raise Corrupt(units[first][0], "checksum mismatch")
    return True


# ------------------------------------------------------------------------------------ several processes

def _process_share() -> tuple[int, int]:
    """(this process's index, process count) when JAX runs several processes, else (0, 1). JAX is not
    imported here: a process that has not imported it runs alone."""
    jax = sys.modules.get("jax")
    if jax is None:
        return 0, 1
    try:
        count = jax.process_count()
    except Exception:  # noqa: BLE001  (no backend: a lone process)
        return 0, 1
    return (jax.process_index(), count) if count > 1 else (0, 1)


def _first_everywhere(local_first: int, count: int) -> int:
    """The smallest of every process's `local_first` (a collective when count > 1)."""
    if count == 1:
        return local_first
    import numpy as np
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.asarray(local_first, np.int32))))


# ------------------------------------------------------------------------------------ messages

_noted: set[str] = set()


def note_unverified(path: str, what: str) -> None:
    """Say once per path and process (process 0 only) that `what` (e.g. "checkpoint 4 in /x/checkpoints")
    at `path` is used without a checksum check."""
    key = os.path.abspath(os.fspath(path))
    if key in _noted or _process_share()[0] != 0:
        return
    _noted.add(key)
    print(f"fvjax: {what} has no {LIST_NAME} (written by an older fvjax, or interrupted before the list was "
          "written); using it unverified", file=sys.stderr)

"""Create an output directory atomically: build it under a hidden temporary name, rename when complete."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from fvjax.errors import fail


@contextlib.contextmanager
def atomic_directory(dst: str | Path, where: str = "--dst") -> Iterator[Path]:
    """Yield a temporary sibling of `dst`; on success it becomes `dst`, on any failure it is removed."""
    dst = Path(dst).expanduser()
    if dst.exists():
        fail(where, None, f"{dst} already exists; choose a new directory or remove it first")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new directory
    try:
        yield tmp
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

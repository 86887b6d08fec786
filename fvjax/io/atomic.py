"""Create an output directory atomically: build it under a hidden temporary name, rename when complete."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from fvjax.errors import fail


OWNER = ".fvjax-owner"   # inside the temporary directory: "<host> <pid>" of the process building it


def _remove_abandoned(dst: Path) -> None:
    """Temporary siblings of `dst` left by a process of this host that died (SIGKILL, OOM) are removed;
    those of live processes or other hosts (a shared file system) are left alone."""
    host = socket.gethostname()
    for tmp in dst.parent.glob(f".{dst.name}.tmp-*"):
        try:
            owner_host, pid = (tmp / OWNER).read_text().split()
            if owner_host != host:
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"fvjax: removed {tmp}, left by an interrupted run (process {pid})", file=sys.stderr)
        except (OSError, ValueError):
            continue


@contextlib.contextmanager
def atomic_directory(dst: str | Path, where: str = "--dst") -> Iterator[Path]:
    """Yield a temporary sibling of `dst`; on success it becomes `dst`, on any failure it is removed."""
    dst = Path(dst).expanduser()
    if dst.exists():
        fail(where, None, f"{dst} already exists; choose a new directory or remove it first")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(dst)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
        (tmp / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}")
    except OSError as err:
        fail(where, None, f"cannot create {dst}: {err.strerror or err} ({err.filename or dst.parent})")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new directory
    try:
        yield tmp
        (tmp / OWNER).unlink()
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

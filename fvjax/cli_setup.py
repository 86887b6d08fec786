"""What every fvjax CLI does first (`fvjax.errors.cli_entry` calls `prepare_cli`), before JAX or
transformers start, so that every entry point behaves the same:

- JAX's persistent compilation cache is on (a repeated run skips most compilation): JAX_COMPILATION_CACHE_DIR
  or jax.config's jax_compilation_cache_dir chooses the place, else ~/.cache/fvjax/jax_compilation. Unless
  set otherwise (JAX's environment variables or jax.config), it keeps every program that took 0.1 s or more
  to compile (JAX's default, 1 s, left generate's sampling step, 0.9 s on the tiny pipeline, to compile
  again every run). The place fvjax chooses holds at most 8 GiB, least recently used out first: with a size
  bound JAX locks the directory around each read and write, so several processes (xdist workers, a trainer
  and a generate) share it safely; without one JAX writes entries in place, unlocked, and a process can
  read another's half-written entry (a warning, then it compiles). Library code gets the cache only by
  calling `enable_compilation_cache()` (or `fvjax.training.loop.run_training`, which does);
- a host without TPUs that has libtpu installed (the `tpu` extra, for `--dry-run --topology` compiles)
  would have JAX probe for TPUs and libtpu print several lines of warnings; there, JAX's platforms are set
  to the accelerators the host has (unless JAX_PLATFORMS says otherwise);
- transformers announces at import that PyTorch is missing (fvjax never uses it): its advisory warnings
  are off unless TRANSFORMERS_NO_ADVISORY_WARNINGS is set.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys
import time

DEFAULT_CACHE = os.path.join("~", ".cache", "fvjax", "jax_compilation")
MIN_COMPILE_SECS = 0.1
MAX_CACHE_BYTES = 8 << 30


def _platforms_without_absent_tpus() -> str | None:
    if os.environ.get("JAX_PLATFORMS") is not None or importlib.util.find_spec("libtpu") is None:
        return None
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):   # a TPU VM
        return None
    platforms = (["cuda"] if glob.glob("/dev/nvidia[0-9]*") else []) + (["rocm"] if os.path.exists("/dev/kfd") else [])
    return ",".join(platforms + ["cpu"])


def _set_jax(env: str, option: str, value) -> None:
    """Set a JAX option through its environment variable (read when jax is imported), or through jax.config
    when jax is imported already."""
    os.environ[env] = str(value)
    if "jax" in sys.modules:
        import jax

        jax.config.update(option, value)


def _chosen(env: str, option: str, jax_default) -> bool:
    """Whether JAX's environment variable or jax.config gives the option a value already."""
    if os.environ.get(env):
        return True
    if "jax" in sys.modules:
        import jax

        return getattr(jax.config, option) != jax_default
    return False


def _default_jax(env: str, option: str, value, jax_default) -> None:
    if not _chosen(env, option, jax_default):
        _set_jax(env, option, value)


def _stamp_unstamped_entries(directory: str) -> None:
    """JAX's size-bounded cache reads an access-time file beside every entry, and every write fails while
    one lacks it: stamp the entries an unbounded run left (JAX's default, fvjax before the bound)."""
    try:
        names = set(os.listdir(directory))
    except OSError:
        return
    now = time.time_ns().to_bytes(8, "little")
    for name in names:
        key = name.removesuffix("-cache")
        if key != name and f"{key}-atime" not in names:
            try:
                with open(os.path.join(directory, f"{key}-atime"), "wb") as atime:
                    atime.write(now)
            except OSError:
                return


def enable_compilation_cache(default_dir: str = DEFAULT_CACHE) -> None:
    """Turn on JAX's persistent compilation cache in `default_dir` with the size bound above, unless a place
    is chosen already (its size rules are then its owner's); the minimum compile time above unless chosen."""
    _default_jax("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "jax_persistent_cache_min_compile_time_secs",
                 MIN_COMPILE_SECS, 1.0)
    if _chosen("JAX_COMPILATION_CACHE_DIR", "jax_compilation_cache_dir", None):
        return
    directory = os.path.expanduser(default_dir)
    _default_jax("JAX_COMPILATION_CACHE_MAX_SIZE", "jax_compilation_cache_max_size", MAX_CACHE_BYTES, -1)
    if _chosen("JAX_COMPILATION_CACHE_MAX_SIZE", "jax_compilation_cache_max_size", -1) and (
            os.environ.get("JAX_COMPILATION_CACHE_MAX_SIZE", "") not in ("-1", "0")):
        _stamp_unstamped_entries(directory)
    _set_jax("JAX_COMPILATION_CACHE_DIR", "jax_compilation_cache_dir", directory)


def prepare_cli() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    platforms = _platforms_without_absent_tpus()
    if platforms is not None:
        _set_jax("JAX_PLATFORMS", "jax_platforms", platforms)
    enable_compilation_cache()

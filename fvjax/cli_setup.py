"""What every fvjax CLI does first (`fvjax.errors.cli_entry` calls `prepare_cli`), before JAX or
transformers start, so that every entry point behaves the same:

- JAX's persistent compilation cache is on (a repeated run skips most compilation): JAX_COMPILATION_CACHE_DIR
  or jax.config's jax_compilation_cache_dir chooses the place, else ~/.cache/fvjax/jax_compilation. JAX's
  cache is safe with several processes. Library code gets it only by calling `enable_compilation_cache()`
  (or `fvjax.training.loop.run_training`, which does);
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

DEFAULT_CACHE = os.path.join("~", ".cache", "fvjax", "jax_compilation")


def _platforms_without_absent_tpus() -> str | None:
    if os.environ.get("JAX_PLATFORMS") is not None or importlib.util.find_spec("libtpu") is None:
        return None
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):   # a TPU VM
        return None
    platforms = (["cuda"] if glob.glob("/dev/nvidia[0-9]*") else []) + (["rocm"] if os.path.exists("/dev/kfd") else [])
    return ",".join(platforms + ["cpu"])


def _set_jax(env: str, option: str, value: str) -> None:
    """Set a JAX option through its environment variable (read when jax is imported), or through jax.config
    when jax is imported already."""
    os.environ[env] = value
    if "jax" in sys.modules:
        import jax

        jax.config.update(option, value)


def enable_compilation_cache() -> None:
    """Turn on JAX's persistent compilation cache unless a place is chosen already."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    if "jax" in sys.modules:
        import jax

        if jax.config.jax_compilation_cache_dir is not None:
            return
    _set_jax("JAX_COMPILATION_CACHE_DIR", "jax_compilation_cache_dir", os.path.expanduser(DEFAULT_CACHE))


def prepare_cli() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    platforms = _platforms_without_absent_tpus()
    if platforms is not None:
        _set_jax("JAX_PLATFORMS", "jax_platforms", platforms)
    enable_compilation_cache()

"""Process settings that make XLA:CPU training steps fast (measured in benchmarks/bench_dit_fwd_bwd.py).

Two things cost a CPU step a third of its time with the defaults (jax 0.10, glibc 2.36):

- **Page faults.** XLA:CPU allocates each execution's temporary buffer (156 MB for the benchmark's
  4-layer DiT step) with `posix_memalign` on a worker thread. glibc serves an allocation that large
  from a fresh `mmap` (a worker thread's arena cannot hold it) and unmaps it on free, so every step
  faults all its pages in again: 38,000 minor faults, ~15% of the step. `retain_freed_host_memory`
  makes glibc serve every thread from the main heap, never `mmap`, and keep freed memory for reuse
  (what tcmalloc/jemalloc do by default). Steps then fault (next to) nothing; now and then the heap
  still grows by a buffer (fragmentation), and it stays a little above the peak (measured: +0.5%).
  Resident memory then never shrinks, so this applies only when JAX will run on the CPU: on an
  accelerator host the step buffers live on the device, and keeping the host heap at the peak of
  loading a checkpoint would only waste host memory.
- **YNNPACK reductions.** XLA:CPU hands reductions to YNNPACK by default; its reductions over the
  token axis (every norm-scale, modulation and bias gradient) run ~20x slower than XLA's own loops.
  `compiler_options()` keeps YNNPACK for matmuls only; pass it to the `jax.jit` of a training step.

Both are no-ops where they do not apply (other C libraries, other backends, XLA builds without the
option). `FVJAX_RETAIN_HOST_MEMORY=0` turns the allocator setting off.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2 ** 31 - 1  # int-sized "never give the top of the heap back"

_YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_MATMULS_ONLY = "LIBRARY_FUSION_TYPE_DOT"


def retain_freed_host_memory() -> bool:
    """When JAX will compute on the CPU, configure glibc malloc to reuse freed memory instead of
    unmapping it; True when applied.

    Call it before JAX starts its backends (the first `jax.devices()` or computation): by then XLA's
    threads have their own arenas and the setting no longer reaches them. Safe to call more than once.
    """
    if os.environ.get("FVJAX_RETAIN_HOST_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if not jax_will_use_cpu():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # One arena: worker threads allocate from the main heap, which can grow past the 64 MB limit of
    # a per-thread arena; no mmap: large blocks come from (and return to) that heap; no trimming.
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))


def jax_will_use_cpu() -> bool:
    """Whether JAX's default backend will be the CPU, decided without starting any backend: the
    platforms asked for (JAX_PLATFORMS / jax_platforms), else whether an accelerator plugin or libtpu
    is installed (JAX prefers those whenever they are)."""
    import importlib.metadata
    import importlib.util
    import pkgutil

    import jax

    platforms = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    if importlib.util.find_spec("libtpu") is not None or importlib.metadata.entry_points(group="jax_plugins"):
        return False
    plugins = importlib.util.find_spec("jax_plugins")
    return plugins is None or not any(pkgutil.iter_modules(plugins.submodule_search_locations))


@functools.cache
def compiler_options(platform: str | None = None) -> dict[str, str]:
    """Per-jit XLA options for training steps compiled for `platform` (default: JAX's default backend):
    the CPU's below, {} for other platforms or when this XLA does not know them."""
    import jax
    import jax.numpy as jnp

    if (platform or jax.default_backend()) != "cpu" or jax.default_backend() != "cpu":
        return {}
    options = {_YNN_FUSION_OPTION: _YNN_MATMULS_ONLY}
    try:  # XLA rejects unknown options: probe once, so other jaxlib versions compile as before
        jax.jit(lambda x: x + 1, compiler_options=options).lower(jnp.zeros((), jnp.float32)).compile()
    except Exception:  # noqa: BLE001 - any rejection means "not supported by this XLA"
        return {}
    return options

"""What every fvjax CLI does before JAX or transformers start, so that their start-up says nothing that
means nothing to the user:

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


def _platforms_without_absent_tpus() -> str | None:
    if os.environ.get("JAX_PLATFORMS") is not None or importlib.util.find_spec("libtpu") is None:
        return None
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):   # a TPU VM
        return None
    platforms = (["cuda"] if glob.glob("/dev/nvidia[0-9]*") else []) + (["rocm"] if os.path.exists("/dev/kfd") else [])
    return ",".join(platforms + ["cpu"])


def quiet_start() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    platforms = _platforms_without_absent_tpus()
    if platforms is None:
        return
    os.environ["JAX_PLATFORMS"] = platforms
    if "jax" in sys.modules:   # imported already: its config read the environment then
        import jax

        jax.config.update("jax_platforms", platforms)

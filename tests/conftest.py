import os
import pathlib
import sys

# Eight simulated CPU devices for the sharding tests; must be set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests run offline: hub ids resolve from the local cache only (a real run would download them).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# XLA:CPU runs the 8 simulated devices on one pool of max(cores, devices) threads, and a waiting
# collective holds a thread: under load the pool can fill with waiting collectives and a rendezvous
# aborts (tests/test_dmd2_train.py explains the measured case). Spare threads for every in-process test
# and trainer subprocess; real accelerators wait on device streams, not host threads.
os.environ.setdefault("PJRT_NPROC", "32")
# Many tests compile the same tiny models (also in trainer subprocesses, which inherit the environment):
# JAX's persistent compilation cache turns a repeat compile of ~10 s into ~1 s. One cache inside the clone
# (gitignored; a clean clone starts empty) for all xdist workers, their subprocesses and later runs, set
# up as the CLIs' (fvjax/cli_setup.py): a size bound, under which JAX locks the directory around each read
# and write (workers compile the same programs at the same time). Programs of 0.5 s and more, not the
# CLIs' 0.1 s: a bounded cache reads every entry's access time on each write (JAX's LRU eviction), and
# the suite writes hundreds of entries where a CLI run writes a few.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
from fvjax.cli_setup import enable_compilation_cache  # noqa: E402 - imports no jax

enable_compilation_cache(str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax_compilation"))
# Test helper modules (training_utils.py, ...) import as top-level modules.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

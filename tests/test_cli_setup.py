"""Every CLI's start-up (fvjax/cli_setup.py): JAX's persistent compilation cache on unless a place is
chosen, keeping programs of 0.1 s and more under a size bound (JAX's lock) unless told otherwise;
JAX_PLATFORMS always wins."""
from __future__ import annotations

import os
import subprocess
import sys

from training_utils import REPO


def _startup_env(**env) -> dict:
    code = ("import os, sys\nfrom fvjax.cli_setup import prepare_cli\nprepare_cli()\nimport jax\n"
            "print(jax.config.jax_compilation_cache_dir)\nprint(os.environ.get('JAX_PLATFORMS'))\n"
            "print(jax.config.jax_persistent_cache_min_compile_time_secs)\nprint(jax.config.jax_compilation_cache_max_size)")
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PLATFORMS",
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "JAX_COMPILATION_CACHE_MAX_SIZE")}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**base, **env})
    assert res.returncode == 0, res.stderr
    return dict(zip(("cache", "platforms", "min_compile_secs", "max_size"), res.stdout.split("\n")))


def test_every_cli_caches_compilations_where_told(tmp_path):
    assert _startup_env(HOME=str(tmp_path))["cache"] == str(tmp_path / ".cache/fvjax/jax_compilation")
    assert _startup_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))["cache"] == str(tmp_path / "mine")
    assert _startup_env(JAX_PLATFORMS="cpu")["platforms"] == "cpu"


def test_the_cache_keeps_quick_compiles_and_locks_unless_told_otherwise(tmp_path):
    # An entry an unbounded run left (no access-time file) would fail every write of a bounded cache.
    cache = tmp_path / ".cache/fvjax/jax_compilation"
    cache.mkdir(parents=True)
    (cache / "jit_f-0123-cache").write_bytes(b"x")
    default = _startup_env(HOME=str(tmp_path))
    assert (default["min_compile_secs"], default["max_size"]) == ("0.1", str(8 << 30))
    assert (cache / "jit_f-0123-atime").is_file()
    mine = _startup_env(HOME=str(tmp_path), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="2",
                        JAX_COMPILATION_CACHE_MAX_SIZE="-1")
    assert (mine["min_compile_secs"], mine["max_size"]) == ("2.0", "-1")
    # a place chosen by the user keeps JAX's (unbounded) default
    assert _startup_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))["max_size"] == "-1"

"""Every CLI's start-up (fvjax/cli_setup.py): JAX's persistent compilation cache on unless a place is
chosen; JAX_PLATFORMS always wins."""
from __future__ import annotations

import os
import subprocess
import sys

from training_utils import REPO


def _startup_env(**env) -> dict:
    code = ("import os, sys\nfrom fvjax.cli_setup import prepare_cli\nprepare_cli()\nimport jax\n"
            "print(jax.config.jax_compilation_cache_dir)\nprint(os.environ.get('JAX_PLATFORMS'))")
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PLATFORMS")}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**base, **env})
    assert res.returncode == 0, res.stderr
    return dict(zip(("cache", "platforms"), res.stdout.split("\n")))


def test_every_cli_caches_compilations_where_told(tmp_path):
    assert _startup_env(HOME=str(tmp_path))["cache"] == str(tmp_path / ".cache/fvjax/jax_compilation")
    assert _startup_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))["cache"] == str(tmp_path / "mine")
    assert _startup_env(JAX_PLATFORMS="cpu")["platforms"] == "cpu"

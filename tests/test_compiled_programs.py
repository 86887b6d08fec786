"""How many XLA programs `python -m fvjax.generate` builds (issue 19): each is compiled on a first run and
read back from the compilation cache on later ones, so every extra program is start-up time.

Counted in a fresh process from jax.monitoring's backend-compile events, which fire for a cache hit as well
as for a compile: the count does not depend on what the persistent cache holds."""
from __future__ import annotations

import collections
import json
import subprocess
import sys

import pytest

from tiny_pipeline import write_tiny_wan_pipeline
from training_utils import REPO

SIZE = ["--num-frames", "5", "--height", "32", "--width", "48"]
_COUNT = """
import collections, json, sys
import jax.monitoring
names = collections.Counter()
def on_duration(event, duration, fun_name=None, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        names[fun_name] += 1
jax.monitoring.register_event_duration_secs_listener(on_duration)
from fvjax.generate import main
assert main(sys.argv[1:]) == 0
print(json.dumps(names))
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return write_tiny_wan_pipeline(tmp_path_factory.mktemp("programs") / "pipeline")


def _programs(*args: str) -> collections.Counter:
    res = subprocess.run([sys.executable, "-c", _COUNT, *args, "--no-progress"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return collections.Counter(json.loads(res.stdout.strip().splitlines()[-1]))


def test_unipc_with_guidance_builds_four_programs(pipeline, tmp_path):
    """The text encoder (prompt and negative prompt alike), the start (noise drawn inside, solver state),
    one sampling step for every step (the first included), the VAE decode."""
    programs = _programs("--model", str(pipeline), "--prompt", "a red cat", *SIZE, "--steps", "3",
                         "--out", str(tmp_path / "v.mp4"))
    assert programs == {"jit(run)": 1, "jit(_start)": 1, "jit(ode_step)": 1, "jit(<lambda>)": 1}, programs


def test_dmd_sampler_builds_three_programs(pipeline, tmp_path):
    """The text encoder, the whole few-step chain with its noise, the VAE decode."""
    programs = _programs("--model", str(pipeline), "--prompt", "a red cat", *SIZE, "--sampler", "dmd",
                         "--denoising-steps", "1000,757,522", "--out", str(tmp_path / "v.mp4"))
    assert programs == {"jit(run)": 1, "jit(_dmd_sample)": 1, "jit(<lambda>)": 1}, programs

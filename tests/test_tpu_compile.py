"""The tiny DMD2 and finetune training steps compile for a TPU slice on this CPU host (libtpu's
compiler, compile-only devices), with the TPU kernels (splash attention under shard_map), so a change
that breaks TPU lowering fails here; and `--dry-run --topology` names bad topologies in one line."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import yaml

from fvjax.errors import UserError
from fvjax.recipe import parse_recipe
from fvjax.training.aot import _torus, parse_target
from training_utils import REPO, finetune_recipe, tiny_dmd2_recipe

LIBTPU = importlib.util.find_spec("libtpu") is not None


def _tiny(name: str, tmp_path) -> dict:
    recipe = (finetune_recipe if name == "finetune" else tiny_dmd2_recipe)(tmp_path / "data", tmp_path / "out")
    recipe["training"].update(train_batch_size=1, num_gpus=4)
    return recipe


@pytest.mark.skipif(not LIBTPU, reason="libtpu is not installed (pip install -e '.[tpu]'); CI installs it")
@pytest.mark.parametrize("method", ["dmd2", "finetune"])
def test_tiny_training_step_compiles_for_a_tpu_slice(method, tmp_path):
    from fvjax.training.aot import compile_step

    recipe = parse_recipe(yaml.safe_dump(_tiny(method, tmp_path)), tmp_path / "recipe.yaml", device_count=4)
    step = compile_step(recipe, parse_target("v5litepod-4"))
    assert step.devices == 4 and step.fits and 0 < step.total_bytes < 2 ** 30
    assert step.pallas_kernels > 0   # splash attention, chosen from the TPU target on a CPU host
    assert step.step_flops > 0


@pytest.mark.parametrize("name,topology,chips", [("v5p-8", "v5p:2x2x1", 4), ("v4-32", "v4:2x2x4", 16),
                                                 ("v6e-8", "v6e:2x4", 8), ("v5litepod-16", "v5e:4x4", 16),
                                                 ("v5e-256", "v5e:16x16", 256), ("v5p-128", "v5p:4x4x4", 64)])
def test_accelerator_types_name_their_libtpu_topology(name, topology, chips):
    target = parse_target(name)
    assert target.topology_name == topology and target.chips == chips


@pytest.mark.parametrize("flags,words", [
    (["--topology", "h100-8"], "--topology: h100-8: compiling for GPUs is not available without the GPUs"),
    (["--topology", "v9-8"], "--topology: 'v9-8' is not a Cloud TPU accelerator type; use e.g. v5p-8"),
    (["--topology", "v5p-6"], "--topology: v5p-6: no such slice"),
])
def test_bad_topologies_are_one_line_errors(flags, words):
    res = subprocess.run([sys.executable, "-m", "fvjax.train", "--config", "configs/examples/tiny_finetune.yaml",
                          "--dry-run", *flags], cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("fvjax: error: command line: ") and words in lines[0], lines[0]


def test_topology_needs_dry_run():
    from fvjax.train import main

    with pytest.raises(SystemExit) as stop:
        main(["--config", str(REPO / "configs/examples/tiny_finetune.yaml"), "--topology", "v5p-8"])
    assert stop.value.code == 2
    assert _torus(2, 2) == "1x2" and _torus(32, 3) == "2x4x4"
    with pytest.raises(UserError):
        parse_target("v5p")

"""A model family and a method from outside fvjax (tests/plugins/src/fvjax_toy, a package fvjax never
imports) train, checkpoint, resume and export from a recipe, found through the entry points of an
installed distribution (tests/plugins/site/fvjax_toy-0.1.dist-info) or through the public registry calls.
Everything runs in fresh processes: the plug-in is known only there."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training_utils import REPO, assert_same_arrays, checkpoint_arrays, make_data, metrics_by_step, write_recipe

PLUGINS = Path(__file__).with_name("plugins")
STEPS = 4


def _env(entry_points: bool = True) -> dict:
    paths = [str(PLUGINS / "src")] + ([str(PLUGINS / "site")] if entry_points else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])}


def _run(args: list[str], entry_points: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, *args], cwd=REPO, env=_env(entry_points), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"{args} exited {res.returncode}: {res.stderr[-3000:]}"
    return res


def _recipe(data, output_dir, **training) -> dict:
    recipe = {
        "recipe": {"family": "toy", "method": "regress"},
        "models": {"student": {"path": "toy-small"}},
        "training": {"data_path": str(data), "output_dir": str(output_dir), "train_batch_size": 2, "num_latent_t": 3,
                     "num_height": 64, "num_width": 64, "num_frames": 9, "max_train_steps": STEPS, "seed": 0,
                     "training_state_checkpointing_steps": 2, "learning_rate": 1e-2, "mixed_precision": "no",
                     "num_gpus": 1, **training},
        "method_config": {"target_scale": 0.5, "noise_level": 0.25},
    }
    return recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "tiny", num_samples=8)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("toy")
    recipe = write_recipe(root / "recipe.yaml", _recipe(data, root / "out"))
    _run(["-m", "fvjax.train", "--config", str(recipe)])
    return root / "out"


def test_entry_point_plugin_trains_and_its_loss_falls(straight):
    rows = metrics_by_step(straight)
    assert sorted(rows) == list(range(1, STEPS + 1))
    assert rows[STEPS]["student/loss"] < rows[1]["student/loss"]
    assert {"student/grad_norm", "student/lr"} <= set(rows[1])
    assert sorted(int(p.name) for p in (straight / "checkpoints").iterdir()) == [2, 4]


def test_dry_run_plans_the_plugin_roles(tmp_path, data):
    recipe = write_recipe(tmp_path / "recipe.yaml", _recipe(data, tmp_path / "out"))
    out = _run(["-m", "fvjax.train", "--config", str(recipe), "--dry-run"]).stdout
    assert "family=toy method=regress" in out and "(2 blocks, width 24)" in out and "ready to train" in out


def test_resume_is_bit_exact(tmp_path, data, straight):
    half = write_recipe(tmp_path / "half.yaml", _recipe(data, tmp_path / "out", max_train_steps=2))
    _run(["-m", "fvjax.train", "--config", str(half)])
    full = write_recipe(tmp_path / "full.yaml", _recipe(data, tmp_path / "out"))
    _run(["-m", "fvjax.train", "--config", str(full), "--resume-from-checkpoint", "latest"])
    expected, got = checkpoint_arrays(straight, STEPS), checkpoint_arrays(tmp_path / "out", STEPS)
    assert expected.keys() == got.keys() and any("opt_state" in k for k in got)
    assert_same_arrays(expected, got)
    assert metrics_by_step(tmp_path / "out")[STEPS] | {"step_time_sec": 0} == \
        metrics_by_step(straight)[STEPS] | {"step_time_sec": 0}


CHECK_EXPORT = """
import sys, numpy as np, fvjax
from fvjax.weights import load_params
src, back = sys.argv[1], sys.argv[2]
_, a = load_params(src); _, b = load_params(back)
flat = lambda t: dict(__import__("fvjax.models.params", fromlist=["flatten"]).flatten(t))
fa, fb = flat(a), flat(b)
assert fa.keys() == fb.keys() and all(np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])) for k in fa)
model = fvjax.load_transformer(back)
assert model.family.name == "toy"
x = np.random.default_rng(0).standard_normal((1, 16, 3, 8, 8)).astype(np.float32)
out = np.asarray(model(x, np.array([500.0], np.float32), np.ones((1, 4, 32), np.float32)))
assert out.shape == x.shape and np.isfinite(out).all()
print("ok", len(fa))
"""


def test_export_converts_both_ways_and_loads(tmp_path, straight):
    student = straight / "student"
    manifest = json.loads((student / "fvjax_manifest.json").read_text())
    assert manifest["family"] == "toy" and manifest["model"] == "ToyTransformer"
    diffusers_dir, back = tmp_path / "diffusers", tmp_path / "back"
    _run(["-m", "fvjax.convert", "fvjax-to-diffusers", "--src", str(student), "--dst", str(diffusers_dir),
          "--no-progress"])
    config = json.loads((diffusers_dir / "config.json").read_text())
    assert config["_class_name"] == "ToyTransformer" and config["hidden"] == 24
    _run(["-m", "fvjax.convert", "diffusers-to-fvjax", "--src", str(diffusers_dir), "--dst", str(back),
          "--no-progress"])
    assert _run(["-c", CHECK_EXPORT, str(student), str(back)]).stdout.startswith("ok 9")


REGISTER_AND_DRY_RUN = """
import sys
import fvjax_toy
from fvjax.families import available_families
from fvjax.methods import available_methods
assert "toy" not in available_families() and "regress" not in available_methods()
fvjax_toy.register()
assert "toy" in available_families() and "regress" in available_methods()
from fvjax.train import main
sys.exit(main(["--config", sys.argv[1], "--dry-run"]))
"""


def test_public_registry_calls_without_entry_points(tmp_path, data):
    recipe = write_recipe(tmp_path / "recipe.yaml", _recipe(data, tmp_path / "out"))
    out = _run(["-c", REGISTER_AND_DRY_RUN, str(recipe)], entry_points=False).stdout
    assert "family=toy method=regress" in out


def test_without_the_plugin_the_recipe_is_one_line_error(tmp_path, data):
    recipe = write_recipe(tmp_path / "recipe.yaml", _recipe(data, tmp_path / "out"))
    res = subprocess.run([sys.executable, "-m", "fvjax.train", "--config", str(recipe), "--dry-run"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"fvjax: error: {recipe}: recipe.family: unknown family 'toy'; "
                                               "available: wan, wan_causal"]

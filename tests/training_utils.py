"""Helpers for end-to-end training tests: tiny recipes, synthetic data, running the trainer in-process or
as a subprocess, reading metrics and checkpoints back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from fvjax.training.checkpoint import Checkpointer, checkpoint_root
from fvjax.data.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[1]
TINY_LATENT = (16, 3, 8, 8)
TINY_TEXT = (16, 32)   # tokens, text_dim of the "tiny" preset


def make_data(path: Path, num_samples: int = 8, fmt: str = "fvjax", seed: int = 0) -> str:
    return write_synthetic(str(path), fmt, num_samples, TINY_LATENT, TINY_TEXT[0], TINY_TEXT[1], seed)


def finetune_recipe(data_path: str, output_dir: Path, **training) -> dict:
    """The tiny finetune recipe (configs/examples/tiny_finetune.yaml) with test-sized settings."""
    recipe = yaml.safe_load((REPO / "configs/examples/tiny_finetune.yaml").read_text())
    recipe["training"].update(data_path=str(data_path), output_dir=str(output_dir), max_train_steps=8,
                              training_state_checkpointing_steps=0, checkpoints_total_limit=0, train_batch_size=2)
    recipe["training"].update(training)
    return recipe


def tiny_dmd2_recipe(data_path: str, output_dir: Path, generator_update_interval: int = 2, **training) -> dict:
    """configs/examples/tiny_dmd2.yaml without validation videos (its model_path, outputs/tiny_pipeline, is
    made by the demo, not by a checkout), with `training` overrides."""
    recipe = yaml.safe_load((REPO / "configs/examples/tiny_dmd2.yaml").read_text())
    recipe["training"].update(data_path=str(data_path), output_dir=str(output_dir), model_path="", log_validation=False)
    recipe["training"].update(training)
    recipe["method_config"]["generator_update_interval"] = generator_update_interval
    return recipe


def example_recipe(name: str, data: str, output_dir: Path, steps: int, **training) -> dict:
    """configs/examples/<name>.yaml at test size, in either schema: Phase 3's flat `training:` (checkpoints every
    steps // 2, `training` overrides) or the current nested one (no checkpoints)."""
    recipe = yaml.safe_load((REPO / f"configs/examples/{name}.yaml").read_text())
    if "method_config" in recipe:
        recipe["training"].update(data_path=str(data), output_dir=str(output_dir), max_train_steps=steps,
                                  training_state_checkpointing_steps=steps // 2, **training)
    else:
        recipe["training"]["data"]["data_path"] = str(data)
        recipe["training"]["loop"]["max_train_steps"] = steps
        recipe["training"]["checkpoint"].update(output_dir=str(output_dir), training_state_checkpointing_steps=0)
    return recipe


def method_block(recipe: dict) -> dict:
    """The method's keys: Phase 3's `method_config`, or the current schema's `method`."""
    return recipe["method_config" if "method_config" in recipe else "method"]


def train_once(root: Path, recipe: dict) -> Path:
    """Train `recipe` in this process, its recipe file under root; its output directory."""
    assert train_in_process(write_recipe(root / "recipe.yaml", recipe)) == 0
    return Path(recipe["training"].get("output_dir") or recipe["training"]["checkpoint"]["output_dir"])


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def train_in_process(recipe_path: Path, *flags: str) -> int:
    from fvjax.train import main
    return main(["--config", str(recipe_path), *flags])


def train_in_subprocess(recipe_path: Path, *flags: str, timeout: float = 900) -> None:
    """Train in a fresh process (no state left by earlier in-process runs); fails with its stderr."""
    res = subprocess.run(train_command(recipe_path, *flags), cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, timeout=timeout)
    assert res.returncode == 0, f"trainer exited {res.returncode}: {res.stderr[-3000:]}"


def train_command(recipe_path: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "fvjax.train", "--config", str(recipe_path), *flags]


def kill_after_checkpoint(recipe_path: Path, output_dir: Path, step: int, timeout: float = 600) -> int:
    """Start the trainer as a subprocess, SIGKILL it as soon as checkpoint `step` is finalized; returns
    the subprocess's return code (-9 when it was killed)."""
    target = Path(checkpoint_root(str(output_dir))) / str(step)
    proc = subprocess.Popen(train_command(recipe_path), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not target.is_dir():  # orbax renames the finished checkpoint into place: exists = finalized
            if proc.poll() is not None:
                raise AssertionError(f"trainer exited ({proc.returncode}) before checkpoint {step}: "
                                     f"{proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no checkpoint {step} after {timeout} s")
            time.sleep(0.005)
        proc.kill()
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def metrics_by_step(output_dir: Path) -> dict[int, dict]:
    """metrics.jsonl as {step: row}; a step logged twice (a resumed run repeating it) keeps the last row."""
    rows = {}
    for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["step"]] = row
    return rows


def checkpoint_arrays(output_dir: Path, step: int) -> dict[str, np.ndarray]:
    """Every array of checkpoint `step` as host numpy, keyed by its path."""
    with Checkpointer(checkpoint_root(str(output_dir)), read_only=True) as ckpt:
        state = ckpt.restore(step).state
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def subprocess_env() -> dict:
    return dict(os.environ)


def role_arrays(arrays: dict, role: str, field: str = "") -> dict:
    """The entries of `checkpoint_arrays` under one role (and one of its fields: params, ema, ...)."""
    prefix = f"['{role}']" + (f"['{field}']" if field else "")
    return {k: v for k, v in arrays.items() if k.startswith(prefix)}


def assert_same_arrays(expected: dict, got: dict) -> None:
    """The same array names, bit-identical values (a failure names the array)."""
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def assert_same_metric(expected_dir: Path, got_dir: Path, key: str) -> None:
    """`key` bit-identical at every step of two runs (one experiment written in two schemas)."""
    expected, got = metrics_by_step(expected_dir), metrics_by_step(got_dir)
    assert sorted(got) == sorted(expected)
    for step in expected:
        assert got[step][key] == expected[step][key], step


def assert_resume_is_bit_exact(straight_run: Path, recipe: dict, root: Path, at: int, steps: int) -> None:
    """`recipe` (writing elsewhere) resumed from straight_run's checkpoint `at` ends with the same checkpoint at
    `steps`, bit for bit."""
    resumed = Path(recipe["training"]["output_dir"])
    path = write_recipe(root / "resumed.yaml", recipe)
    assert train_in_process(path, "--resume-from-checkpoint", str(straight_run / "checkpoints" / str(at))) == 0
    assert_same_arrays(checkpoint_arrays(straight_run, steps), checkpoint_arrays(resumed, steps))


def assert_state_close(reference: dict, other: dict, fields: tuple[str, ...] = ("params",), tol: float = 1e-5) -> None:
    """The arrays of the given state fields (checkpoint_arrays names) within `tol` of the reference's, relative to
    each array's norm: Adam turns last-bit differences of near-zero gradients into full-size steps, so single
    elements near zero are not comparable one by one."""
    names = [name for name in reference if any(f"['{field}']" in name for field in fields)]
    assert names and reference.keys() == other.keys()
    for name in names:
        scale = max(np.linalg.norm(reference[name].ravel()), 1e-12)
        err = np.linalg.norm((other[name] - reference[name]).ravel()) / scale
        assert err <= tol, (name, err)


def same_arrays(a: dict, b: dict) -> bool:
    """Two non-empty dicts of arrays hold the same keys and bit-identical values."""
    assert a.keys() == b.keys() and a
    return all(np.array_equal(a[k], b[k]) for k in a)

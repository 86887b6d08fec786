"""Seeded fuzzing of recipes in every schema (Phase 2, Phase 3, FastVideo's current one): each mutated
recipe either plans with --dry-run or is refused with one `fvjax: error:` line and exit 2, never a
traceback; a sample of those that plan also run one real training step (or fail with one line)."""
from __future__ import annotations

import copy
import math
import os
import random
from pathlib import Path

import pytest
import yaml

from test_train_cli import run
from training_utils import REPO

BASES = {
    "phase2": REPO / "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps_phase2.yaml",
    "phase3_dmd2": REPO / "configs/examples/tiny_dmd2.yaml",
    "phase3_finetune": REPO / "configs/examples/tiny_finetune.yaml",
    "design_branch": REPO / "configs/distill/fastvideo_design_branch_dmd2.yaml",
    "current_dmd2": REPO / "configs/examples/tiny_dmd2_fastvideo_train.yaml",
    "current_finetune": REPO / "tests/recipes/fastvideo_train/plans/finetune_t2v.yaml",
}
# CI runs 60 per base; FVJAX_FUZZ_CASES / FVJAX_FUZZ_SEED explore more (each failure names its mutation)
CASES_PER_BASE = int(os.environ.get("FVJAX_FUZZ_CASES", "60"))
SEED = os.environ.get("FVJAX_FUZZ_SEED", "0")
VALUES = [None, True, False, 0, 1, -1, 3, 2 ** 31, 2 ** 64, -2 ** 63, 0.5, -0.5, 1e30, -1e300, math.inf, math.nan,
          "", " ", "a", "none", "latest", "1,2", "0.0,0.999", "a:2,b:x", "\u00e9\u4e2d", "x" * 5000, "y" * 300, "/proc/x", "a\x00b",
          [], [1], [1000, 500], ["a", "b"], [[1]], {}, {"a": 1}, {"_target_": "x.y"}, [None], [math.nan]]
TYPO_KEYS = ["learning_rte", "max_train_step", "sedd", "_target", "init_frm", "flow_shif", "decay2", "???"]


def _paths(node, prefix=()):
    """Every key path (and list index) of the raw recipe."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _parent(raw, path):
    node = raw
    for part in path[:-1]:
        node = node[part]
    return node


def mutate(raw: dict, rng: random.Random) -> tuple[dict, str]:
    raw = copy.deepcopy(raw)
    paths = list(_paths(raw))
    path = rng.choice(paths)
    parent, last = _parent(raw, path), path[-1]
    kind = rng.choice(["value", "value", "value", "delete", "typo", "add", "wrap"])
    where = ".".join(map(str, path))
    if kind == "value":
        value = rng.choice(VALUES)
        parent[last] = value
        return raw, f"{where} = {str(value)[:40]!r}"
    if kind == "delete":
        del parent[last]
        return raw, f"del {where}"
    if kind == "typo" and isinstance(parent, dict):
        parent[rng.choice(TYPO_KEYS)] = parent.pop(last)
        return raw, f"rename {where}"
    if kind == "add" and isinstance(parent, dict):
        parent[rng.choice(TYPO_KEYS)] = rng.choice(VALUES)
        return raw, f"add beside {where}"
    parent[last] = [parent[last]] if rng.random() < 0.5 else {"x": parent[last]}
    return raw, f"wrap {where}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The tiny recipes' relative inputs (data, demo pipeline), made once."""
    from fvjax.data.synthetic import main as synthetic
    from fvjax.tiny_pipeline import main as tiny_pipeline

    root = tmp_path_factory.mktemp("fuzz")
    synthetic(["--out", str(root / "outputs/data/tiny"), "--format", "fvjax", "--num-samples", "4",
               "--latent-shape", "16,3,8,8", "--text-len", "16", "--text-dim", "32", "--seed", "0"])
    tiny_pipeline(["--out", str(root / "outputs/tiny_pipeline")])
    (root / "configs/examples").mkdir(parents=True)
    (root / "configs/examples/validation_prompts.json").write_text(
        (REPO / "configs/examples/validation_prompts.json").read_text())
    return root


def _check_outcome(code, out: str, err: str, label: str) -> None:
    assert "Traceback" not in err, f"{label}: a traceback\n{err[-3000:]}"
    if code == 0:
        return
    lines = [line for line in err.splitlines() if line.startswith("fvjax: error: ")]
    assert code == 2 and len(lines) == 1, f"{label}: exit {code}, expected one error line\n{err[-3000:]}"


@pytest.mark.parametrize("base", sorted(BASES))
def test_mutated_recipes_plan_or_fail_in_one_line(base, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    rng = random.Random(f"fvjax-fuzz-{base}-{SEED}")
    raw = yaml.safe_load(BASES[base].read_text())
    planned = refused = 0
    for i in range(CASES_PER_BASE):
        mutated, label = mutate(raw, rng)
        path = workdir / f"{base}_{i}.yaml"
        path.write_text(yaml.safe_dump(mutated, sort_keys=False, allow_unicode=True))
        code, out, err = run(["--config", str(path), "--dry-run"])
        _check_outcome(code, out, err, f"{base} #{i} ({label})")
        planned, refused = planned + (code == 0), refused + (code != 0)
    assert planned and refused   # the mutations reach both outcomes


@pytest.mark.parametrize("base", ["phase3_dmd2", "current_dmd2", "phase3_finetune"])
def test_a_sample_of_planning_mutations_trains_one_step_or_fails_in_one_line(base, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    rng = random.Random(f"fvjax-fuzz-run-{base}")
    raw = yaml.safe_load(BASES[base].read_text())
    ran = 0
    for i in range(200):
        mutated, label = mutate(raw, rng)
        path = workdir / f"run_{base}_{i}.yaml"
        path.write_text(yaml.safe_dump(mutated, sort_keys=False, allow_unicode=True))
        out_dir = workdir / f"out_{base}_{i}"
        steps = ("--training.loop.max_train_steps" if base.startswith("current") else "--training.max_train_steps")
        flags = [steps, "1", "--override-output-dir", str(out_dir)]
        if run(["--config", str(path), "--dry-run", *flags])[0] != 0:
            continue
        code, out, err = run(["--config", str(path), *flags])
        _check_outcome(code, out, err, f"{base} run #{i} ({label})")
        ran += 1
        if ran == 2:
            break
    assert ran == 2

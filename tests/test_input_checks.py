"""Values checked by their meaning where they are parsed (issue 17, part): seeds JAX can key, integers
that fit the int32 they become inside a jitted step, known tracker names, whole validation intervals; and
every CLI's own usage errors are the one-line `fvjax: error:` too."""
from __future__ import annotations

import subprocess
import sys

import pytest

from test_recipe_loader import dmd2_base, edit, rejects
from training_utils import REPO


@pytest.mark.parametrize("section,key,value,words", [
    ("training", "seed", -5, "must be in [0, 2**32)"),
    ("training", "seed", 2 ** 64, "must be in [0, 2**32)"),
    ("training", "lr_warmup_steps", 1e30, "must be at most 2147483647"),
    ("training", "max_train_steps", 2 ** 40, "must be at most 2147483647"),
    ("method_config", "generator_update_interval", 1e30, "must be at most 2147483647"),
    ("training", "trackers", ["tensorboard", "bogus"], "is 'bogus'; must be one of tensorboard, wandb, none"),
])
def test_out_of_range_values_are_refused_by_name(section, key, value, words):
    dotted = f"{section}.{key}" + ("[1]" if key == "trackers" else "")
    rejects(edit(dmd2_base(), lambda r: r[section].__setitem__(key, value)), dotted, words)


def test_validation_interval_must_be_whole_steps():
    raw = edit(dmd2_base(), lambda r: r["training"].update(log_validation=True, validation_steps=0.5,
                                                            validation_dataset_file="prompts.json"))
    rejects(raw, "training.validation_steps", "whole number of steps")


@pytest.mark.parametrize("module,args", [("fvjax.convert", ["diffusers-to-fvjax", "--src"]),
                                         ("fvjax.convert", ["sideways"]),
                                         ("fvjax.data.synthetic", ["--out"]),
                                         ("fvjax.preprocess", ["--model", "m"])])
def test_cli_usage_errors_are_one_line(module, args):
    res = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("fvjax: error: command line: "), res.stderr

"""The tiny DMD2 and finetune recipes give the same metrics, bit for bit, as the figures recorded in
tests/golden/tiny_losses.json (recorded at commit bca90f3, before the plug-in redesign of issue 12, by
running this file with FVJAX_RECORD_GOLDEN=1; re-recorded for fp32 rounding changes since, each commit saying
why: `git log tests/golden`). A refactor that changes no maths keeps every figure; one
that changes the numbers on purpose re-records them and says why in its commit."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from training_utils import finetune_recipe, make_data, metrics_by_step, tiny_dmd2_recipe, train_in_process, write_recipe

GOLDEN = Path(__file__).with_name("golden") / "tiny_losses.json"
RECORD = os.environ.get("FVJAX_RECORD_GOLDEN") == "1"
STEPS = 8


RECIPES = {
    "finetune": lambda data, out: finetune_recipe(data, out, max_train_steps=STEPS),
    "dmd2": lambda data, out: tiny_dmd2_recipe(data, out, max_train_steps=STEPS, training_state_checkpointing_steps=0,
                                               checkpoints_total_limit=0, train_batch_size=2),
}


def _figures(output_dir: Path) -> dict[str, dict[str, float]]:
    """Every metric of every step except wall-clock time."""
    return {str(step): {k: v for k, v in row.items() if k not in ("step", "step_time_sec")}
            for step, row in sorted(metrics_by_step(output_dir).items())}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_tiny_recipe_metrics_equal_the_recorded_figures(tmp_path, name):
    data = make_data(tmp_path / "data", num_samples=8)
    recipe = write_recipe(tmp_path / "recipe.yaml", RECIPES[name](data, tmp_path / "out"))
    assert train_in_process(recipe) == 0
    got = _figures(tmp_path / "out")
    assert len(got) == STEPS
    if RECORD:
        recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        recorded[name] = got
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())[name]
    assert got == expected

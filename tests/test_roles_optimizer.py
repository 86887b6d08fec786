"""Each trainable role's optimizer comes from the right recipe fields (FastVideo's fake_score_* for the
critic, wherever the recipe writes them, with FastVideo's fallbacks)."""
from __future__ import annotations

import pytest
import yaml

from fvjax.recipe import load_recipe
from fvjax.training.roles import optimizer_config
from training_utils import REPO


def _load(tmp_path, edit):
    recipe = yaml.safe_load((REPO / "configs/examples/tiny_dmd2.yaml").read_text())
    for key in ("fake_score_learning_rate", "fake_score_betas", "fake_score_lr_scheduler"):
        recipe["training"].pop(key)
    recipe["training"].update(betas=[0.1, 0.99], learning_rate=2e-4, lr_scheduler="constant_with_warmup")
    edit(recipe)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return load_recipe(path, device_count=1)


@pytest.mark.parametrize("section", ["method_config", "training"])
def test_critic_optimizer_from_fake_score_fields(tmp_path, section):
    rec = _load(tmp_path, lambda r: r[section].update(
        fake_score_learning_rate=8e-4, fake_score_betas=[0.5, 0.9], fake_score_lr_scheduler="linear"))
    critic, student = optimizer_config(rec, "critic"), optimizer_config(rec, "student")
    assert (critic.learning_rate, critic.betas, critic.lr_scheduler) == (8e-4, (0.5, 0.9), "linear")
    assert (student.learning_rate, student.betas, student.lr_scheduler) == (2e-4, (0.1, 0.99), "constant_with_warmup")
    assert critic.ema_decay == 0 and student.ema_decay == rec.training.ema_decay  # EMA is the student's


def test_critic_falls_back_to_the_student_lr_and_betas(tmp_path):
    critic = optimizer_config(_load(tmp_path, lambda r: None), "critic")
    assert critic.learning_rate == 2e-4 and critic.betas == (0.1, 0.99)
    assert critic.lr_scheduler == "constant"  # FastVideo: fake_score_lr_scheduler defaults to constant

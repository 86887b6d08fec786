"""Different spellings of one recipe normalise to equal objects; every YAML under configs/ loads."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from fvjax.recipe import load_recipe, parse_recipe
from fvjax.train import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("**/*.yaml")) + sorted((ROOT / "configs").glob("**/*.yml"))


def test_phase2_and_phase3_files_of_the_seed_recipe_are_equal():
    phase3 = load_recipe(ROOT / "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml")
    phase2 = load_recipe(ROOT / "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps_phase2.yaml")
    assert phase3.form == "phase3" and phase2.form == "phase2"
    assert phase2 == phase3
    c = phase3.method_config
    assert c.dmd_denoising_steps == (1000, 850, 700, 550, 350, 275, 200, 125)
    assert (c.flow_shift, c.generator_update_interval, c.real_score_guidance_scale, c.rollout_mode) == \
        (8.0, 5, 3.5, "simulate")
    assert phase3.roles["teacher"].path == "Wan-AI/Wan2.1-T2V-14B-Diffusers" and not phase3.roles["teacher"].trainable
    assert phase3.training.training_state_checkpointing_steps > 0  # checkpointing on


def test_phase2_and_phase3_of_a_constructed_recipe_are_equal():
    phase3 = {
        "recipe": {"family": "wan", "method": "dmd2"},
        "roles": {"student": {"path": "tiny"}, "teacher": {"path": "tiny", "trainable": False},
                  "critic": {"path": "tiny"}},
        "training": {"seed": 3, "betas": [0.0, 0.999], "validation_sampling_steps": [3]},
        "pipeline_config": {"flow_shift": 5},
        "method_config": {"rollout_mode": "data_latent", "dmd_denoising_steps": [1000, 757, 522],
                          "generator_update_interval": 2, "real_score_guidance_scale": 3.0,
                          "warp_denoising_step": True},
    }
    phase2 = {
        "distill": {"model": "wan", "method": "dmd2"},
        "models": phase3["roles"],
        "training": {"seed": 3, "betas": "0.0,0.999", "validation_sampling_steps": "3",
                     "generator_update_interval": 2, "real_score_guidance_scale": 3.0,
                     "simulate_generator_forward": False, "warp_denoising_step": True},
        "pipeline_config": {"flow_shift": 5, "dmd_denoising_steps": [1000, 757, 522]},
    }
    a = parse_recipe(yaml.safe_dump(phase3), "a.yaml")
    b = parse_recipe(yaml.safe_dump(phase2), "b.yaml")
    assert a == b and a.roles_key == "roles" and b.roles_key == "models"


def test_finetune_config_file():
    r = load_recipe(ROOT / "configs/finetune/wan2.1_t2v_1.3B.yaml")
    assert r.method == "finetune" and r.method_config.pred_type == "x0" 
    assert tuple(r.roles) == ("student",)


def test_design_branch_recipe_loads_with_fastvideo_meanings():
    r = load_recipe(ROOT / "configs/distill/fastvideo_design_branch_dmd2.yaml")
    t = r.training
    assert r.roles_key == "roles" and t.num_gpus == 8
    assert r.roles["teacher"].disable_custom_init_weights and r.roles["critic"].disable_custom_init_weights
    assert t.betas == (0.0, 0.999) and t.validation_sampling_steps == (8,) and t.validation_guidance_scale == (6.0,)
    assert r.method_config.rollout_mode == "simulate" and len(r.method_config.dmd_denoising_steps) == 8
    assert r.pipeline.sampler_kind == "sde"
    assert {"mixed_precision", "train_sp_batch_size", "dataloader_num_workers",
            "enable_gradient_checkpointing_type"} <= r.training_given
    assert t.mixed_precision == "bf16" and t.dataloader_num_workers == 4
    # an ignored field is listed by the dry run and kept out of the experiment (its default)
    assert t.train_sp_batch_size == 0 and ("training.train_sp_batch_size", "legacy epoch arithmetic"
                                           ) in [(k, w) for k, w in r.provenance.ignored]
    assert t.enable_gradient_checkpointing_type == "full"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_loads_and_dry_runs(path):
    recipe = load_recipe(path, device_count=8)
    assert recipe.source == path
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", str(path), "--dry-run"]) == 0
    assert "dry run OK" in out.getvalue()


def test_configs_exist():
    names = {p.relative_to(ROOT).as_posix() for p in CONFIGS}
    assert {"configs/distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml", "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps_phase2.yaml",
            "configs/distill/fastvideo_design_branch_dmd2.yaml", "configs/finetune/wan2.1_t2v_1.3B.yaml"} <= names

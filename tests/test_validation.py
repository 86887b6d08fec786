"""Validation videos during training: prompts files, sampler choice per method, and MP4s written during a
tiny DMD2 run whose VAE and text encoder come from a tiny random Diffusers pipeline (training.model_path)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fvjax.errors import UserError
from fvjax.recipe import parse_recipe
from fvjax.data.prompt_files import read_prompts
from fvjax.training.validation import sampler_specs
from fvjax.io.video import read_video
from tiny_pipeline import write_tiny_wan_pipeline
from training_utils import REPO, make_data, train_in_process, write_recipe


def test_prompts_from_fastvideo_json_and_text(tmp_path):
    fastvideo = tmp_path / "validation.json"
    fastvideo.write_text(json.dumps({"data": [{"caption": "a cat", "image_path": None}, {"caption": "a dog"}]}))
    assert read_prompts(str(fastvideo), "recipe.yaml") == ["a cat", "a dog"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(["red sky", {"caption": "blue water"}]))
    assert read_prompts(str(bare), "recipe.yaml") == ["red sky", "blue water"]
    lines = tmp_path / "prompts.txt"
    lines.write_text("a cat\n\n  a dog runs  \n")
    assert read_prompts(str(lines), "recipe.yaml") == ["a cat", "a dog runs"]


@pytest.mark.parametrize("content,expected", [
    ("{not json", "invalid JSON"),
    (json.dumps({"data": [{"caption": ""}]}), "data[0].caption"),
    (json.dumps({"data": []}), "holds no prompts"),
    (json.dumps({"prompts": ["x"]}), "expected {\"data\""),
])
def test_bad_prompt_files_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "validation.json"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        read_prompts(str(path), "recipe.yaml")
    assert expected in err.value.line() and "\n" not in err.value.line()
    with pytest.raises(UserError, match="does not exist"):
        read_prompts(str(tmp_path / "missing.json"), "recipe.yaml")


def load_recipe_dict(recipe: dict, source: str):
    return parse_recipe(yaml.safe_dump(recipe, sort_keys=False), source)


def _recipe(name: str, **training) -> dict:
    recipe = yaml.safe_load((REPO / f"configs/examples/{name}.yaml").read_text())
    recipe["training"].update(training)
    return recipe


def test_dmd2_students_validate_with_their_few_step_chain():
    recipe = load_recipe_dict(_recipe("tiny_dmd2"), source="tiny_dmd2.yaml")
    (spec,) = sampler_specs(recipe)
    assert spec.kind == "dmd" and spec.denoising_steps == (1000.0, 757.0, 522.0) and spec.shift == 8.0
    assert spec.step_count == 3 and not spec.uses_guidance
    with pytest.raises(UserError, match="validation_sampling_steps: is 8 .* 3-step dmd_denoising_steps"):
        load_recipe_dict(_recipe("tiny_dmd2", validation_sampling_steps=[8]), source="tiny_dmd2.yaml")


def test_finetune_validates_with_unipc_and_cfg():
    recipe = load_recipe_dict(_recipe("tiny_finetune", validation_sampling_steps=[4, 8], log_validation=True,
                                      validation_steps=10, validation_guidance_scale=[6.0]),
                              source="tiny_finetune.yaml")
    specs = sampler_specs(recipe)
    assert [(s.kind, s.num_steps, s.guidance_scale) for s in specs] == [("unipc", 4, 6.0), ("unipc", 8, 6.0)]


def test_validation_mp4s_appear_during_a_tiny_dmd2_run(tmp_path):
    pipeline = write_tiny_wan_pipeline(tmp_path / "pipeline")
    prompts = tmp_path / "validation.json"
    prompts.write_text(json.dumps({"data": [{"caption": "a red cat runs"}, {"caption": "blue water"}]}))
    out = tmp_path / "run"
    recipe = _recipe("tiny_dmd2", data_path=make_data(tmp_path / "data"), output_dir=str(out), max_train_steps=2,
                     training_state_checkpointing_steps=0, checkpoints_total_limit=0, model_path=str(pipeline),
                     log_validation=True, validation_steps=2, validation_dataset_file=str(prompts),
                     trackers=["tensorboard"])
    assert train_in_process(write_recipe(tmp_path / "recipe.yaml", recipe)) == 0
    t = recipe["training"]
    frames = (t["num_latent_t"] - 1) * 4 + 1
    for step in (0, 2):   # before the first step (as FastVideo) and every validation_steps
        for i in range(2):
            video, fps = read_video(out / f"validation_step_{step}_inference_steps_3_video_{i}.mp4")
            assert video.shape == (frames, t["num_height"], t["num_width"], 3) and fps == 16
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and any(b"validation_videos_3_steps/1" in e.read_bytes() for e in events)


def test_validation_without_a_pipeline_is_a_recipe_error(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    recipe = _recipe("tiny_dmd2", data_path=make_data(tmp_path / "data"), output_dir=str(tmp_path / "run"),
                     log_validation=True, validation_steps=2, validation_dataset_file=str(prompts), model_path="")
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(path)
    assert exit_info.value.code == 2
    assert "training.model_path: validation needs a Diffusers Wan pipeline" in capsys.readouterr().err
    assert not Path(tmp_path / "run").exists()

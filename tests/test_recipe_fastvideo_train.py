"""FastVideo's current recipe schema (`fastvideo/train`: models.<role>._target_, method: _target_, nested
training.*, callbacks, pipeline): every Wan2.1 T2V example and fixture FastVideo ships (written for these
tests in tests/recipes/fastvideo_train/) plans with --dry-run or is refused in one line naming what fvjax
lacks; the current-schema twins of fvjax's shipped recipes resolve to the same experiment, differing only
in that schema's own defaults; the tiny twin trains; dotted overrides; malformed recipes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fvjax.recipe import load_recipe, parse_recipe
from fvjax.recipe.overrides import parse_overrides
from fvjax.schema.recipe import differences
from fvjax.train import TOP_LEVEL_KEYS
from test_train_cli import _del, _set, assert_one_line_error, run

ROOT = Path(__file__).resolve().parents[1]
RECIPES = Path(__file__).parent / "recipes" / "fastvideo_train"
PLANS = sorted((RECIPES / "plans").glob("*.yaml"))
REFUSED = sorted((RECIPES / "refused").glob("*.yaml"))


@pytest.mark.parametrize("path", PLANS, ids=lambda p: p.stem)
def test_fastvideo_examples_plan_with_dry_run(path):
    code, out, err = run(["--config", str(path), "--dry-run"])
    assert code == 0, err
    assert "written in FastVideo's current schema" in out
    assert "dry run OK" in out
    assert "resolved recipe" in out and "<- recipe" in out


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.stem)
def test_fastvideo_examples_fvjax_lacks_are_refused_in_one_line(path):
    needle = path.read_text().splitlines()[0].removeprefix("# refused: ")
    code, _, err = run(["--config", str(path), "--dry-run"])
    assert_one_line_error(code, err, str(path), needle)


def test_dmd2_example_keeps_the_current_schema_defaults():
    recipe = load_recipe(RECIPES / "plans" / "example.yaml")
    m, t = recipe.method_config, recipe.training
    assert (m.real_score_guidance_scale, m.real_score_guidance_form) == (1.0, "standard")   # not 3.5, legacy form
    assert (m.min_timestep_ratio, m.max_timestep_ratio) == (0.0, 1.0)
    assert m.student_flow_shift == 3.0 and m.flow_shift == 3.0
    assert t.trackers == ("wandb",)                 # trackers: [] with a project name -> W&B, as FastVideo
    assert t.tracker_project_name == "my_project"
    assert t.max_grad_norm == 1.0 and t.ema_decay == 0.0   # grad_clip block, no ema block
    assert t.log_validation and t.validation_steps == 100 and t.validation_sampling_steps == (4,)
    assert t.validation_guidance_scale == (5.0,)
    dmd = load_recipe(RECIPES / "plans" / "dmd2_t2v.yaml")
    assert (dmd.method_config.generator_update_interval, dmd.training.ema_decay, dmd.training.use_ema) == (5, 0.98, True)
    assert dmd.method_config.flow_shift == 8.0 and dmd.method_config.student_flow_shift == 3.0
    ft = load_recipe(RECIPES / "plans" / "finetune_t2v.yaml")
    assert ft.method_config.flow_shift == 3.0 and ft.training.resume_from_checkpoint == "latest"
    assert ft.mesh.num_devices == 8


def test_minimal_finetune_fixture_takes_the_current_defaults():
    recipe = load_recipe(RECIPES / "plans" / "wan_t2v_finetune_min.yaml")
    t = recipe.training
    assert (t.seed, t.dit_precision, t.max_grad_norm, t.ema_decay, t.log_validation) == (42, "bf16", 0.0, 0.0, False)
    assert t.mode_scale == 1.0 and t.trackers == ("wandb",) and t.tracker_project_name == "fastvideo"
    # finetuning trains on the student's own shift (3.0), whatever the pipeline's
    assert recipe.method_config.flow_shift == 3.0


# What FastVideo's current schema defaults differently (spec §1.5, §2.2, §3): the teacher's CFG form,
# the student's own scheduler shift, mode_scale, the tracker project.
CURRENT_DEFAULTS = {"training.mode_scale": (0.0, 1.0), "training.tracker_project_name": ("", "fastvideo")}
DMD2_CURRENT = {"method_config.real_score_guidance_scale": (3.5, 4.5),
                "training.real_score_guidance_scale": (3.5, 4.5),     # (the flat field mirrors the method's)
                "method_config.real_score_guidance_form": ("fastvideo", "standard"),
                "method_config.student_flow_shift": (None, 3.0)}


def test_shipped_dmd2_recipe_and_its_current_schema_twin_are_one_experiment():
    phase3 = load_recipe(ROOT / "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml")
    current = load_recipe(ROOT / "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps_fastvideo_train.yaml")
    assert differences(phase3, current) == {**CURRENT_DEFAULTS, **DMD2_CURRENT}
    assert current.form == "fastvideo_train" and phase3.form == "phase3"


def test_shipped_finetune_recipe_and_its_current_schema_twin_are_one_experiment():
    phase3 = load_recipe(ROOT / "configs/finetune/wan2.1_t2v_1.3B.yaml")
    current = load_recipe(ROOT / "configs/finetune/wan2.1_t2v_1.3B_fastvideo_train.yaml")
    assert differences(phase3, current) == {**CURRENT_DEFAULTS, "method_config.mode_scale": (0.0, 1.0)}


def test_tiny_current_schema_twin_trains(tmp_path, monkeypatch):
    from training_utils import metrics_by_step

    phase3 = load_recipe(ROOT / "configs/examples/tiny_dmd2.yaml")
    current = load_recipe(ROOT / "configs/examples/tiny_dmd2_fastvideo_train.yaml")
    assert differences(phase3, current) == {
        **CURRENT_DEFAULTS, **DMD2_CURRENT, "training.use_ema": (False, True),
        "training.output_dir": ("outputs/tiny_dmd2", "outputs/tiny_dmd2_fastvideo_train")}
    # it trains: the demo data and pipeline, four steps, overridden on the command line
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs/examples").mkdir(parents=True)
    (tmp_path / "configs/examples/validation_prompts.json").write_text(
        (ROOT / "configs/examples/validation_prompts.json").read_text())
    from fvjax.data.synthetic import main as synthetic
    from fvjax.tiny_pipeline import main as tiny_pipeline
    synthetic(["--out", "outputs/data/tiny", "--format", "fvjax", "--num-samples", "4", "--latent-shape", "16,3,8,8",
               "--text-len", "16", "--text-dim", "32", "--seed", "0"])
    tiny_pipeline(["--out", "outputs/tiny_pipeline"])
    code, _, err = run(["--config", str(ROOT / "configs/examples/tiny_dmd2_fastvideo_train.yaml"),
                        "--training.loop.max_train_steps", "4", "--callbacks.validation.every_steps", "0",
                        "--training.checkpoint.training_state_checkpointing_steps", "2"])
    assert code == 0, err
    rows = metrics_by_step(tmp_path / "outputs/tiny_dmd2_fastvideo_train")
    assert sorted(rows) == [1, 2, 3, 4]
    assert (tmp_path / "outputs/tiny_dmd2_fastvideo_train/checkpoints/4").is_dir()


def test_dotted_overrides_are_typed_and_attributed(tmp_path):
    recipe = RECIPES / "plans" / "dmd2_t2v.yaml"
    over = parse_overrides(["--training.loop.max_train_steps", "10", "--method.dmd_denoising_steps=[1000, 500]",
                            "--callbacks.validation.sampling_timesteps", "[1000, 500]",
                            "--callbacks.validation.sampling_steps", "[2]",
                            "--training.tracker.trackers", "[none]", "--callbacks.ema.decay", "0.5"], TOP_LEVEL_KEYS)
    loaded = load_recipe(recipe, overrides=over)
    assert loaded.training.max_train_steps == 10 and loaded.method_config.dmd_denoising_steps == (1000, 500)
    assert loaded.training.trackers == ("none",) and loaded.training.ema_decay == 0.5
    assert loaded.provenance.origin("training.max_train_steps") == "command line"
    # the same overrides in the flat schema
    flat = ROOT / "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml"
    loaded = load_recipe(flat, overrides=parse_overrides(["--training.max_train_steps", "7"], TOP_LEVEL_KEYS))
    assert loaded.training.max_train_steps == 7
    code, out, err = run(["--config", str(recipe), "--dry-run", "--training.loop.max_train_steps", "3"])
    assert code == 0, err
    assert [line for line in out.splitlines() if "training.loop.max_train_steps = 3" in line][0].endswith(
        "<- command line")


@pytest.mark.parametrize("argv,needle", [
    (["--training.loop.max_train_step", "3"], "command line: --training.loop.max_train_step: unknown key; did you "
                                              "mean 'max_train_steps'"),
    (["--training.optimizer.learning_rate", "fast"], "command line: --training.optimizer.learning_rate: must be a "
                                                     "number"),
    (["--method.rollout_mode", "sometimes"], "command line: --method.rollout_mode: is 'sometimes'"),
    (["--callbacks.validation.every_steps.x", "1"], "--callbacks.validation.every_steps.x: callbacks.validation."
                                                    "every_steps is int"),
    (["--models.student.init_from", "null"], "--models.student.init_from: must be a string"),
])
def test_bad_overrides_are_one_line_errors_naming_the_flag(argv, needle):
    code, _, err = run(["--config", str(RECIPES / "plans" / "dmd2_t2v.yaml"), "--dry-run", *argv])
    assert_one_line_error(code, err, needle)


def _mutated(tmp_path, mutate, name="recipe.yaml"):
    raw = yaml.safe_load((RECIPES / "plans" / "dmd2_t2v.yaml").read_text())
    mutate(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


MALFORMED = [
    (_set("training.learning_rate", 1e-5), "training.learning_rate: is a flat (older schema) name; in FastVideo's "
                                           "current schema it is training.optimizer.learning_rate"),
    (_set("training.optimizer.learning_rte", 1e-5), "training.optimizer.learning_rte: unknown key; did you mean "
                                                    "'learning_rate'"),
    (_set("training.optim", {}), "training.optim: unknown key; did you mean 'optimizer'"),
    (lambda raw: (_set("training.optimizer.min_lr_ratio", 0)(raw),
                  _set("training.optimizer.lr_scheduler", "cosine_with_min_lr")(raw)),
     "training.optimizer.min_lr_ratio: is 0, which FastVideo reads as 0.5"),
    (_set("training.optimizer.betas", None), "training.optimizer.betas: is null"),
    (_set("training.tracker.trackers", "wandb"), "training.tracker.trackers: must be a list"),
    (_set("training.tracker.trackers", ["swanlab"]), "swanlab is not supported"),
    (_set("training.model.moba_config", {"a": 1}), "training.model.moba_config: V-MoBA"),
    (_set("training.data.preprocessed_data_type", "t2va"), "training.data.preprocessed_data_type: is 't2va'"),
    (_set("training.data.seed", -1), "training.data.seed: is -1; must be in [0, 2**32)"),
    (_set("training.optimizer.betas", [0.9]), "training.optimizer.betas"),
    (_del("method._target_"), "method._target_: missing"),
    (_set("method._target_", "DMD2Method"), "method._target_: must be a dotted class path"),
    (_set("method._target_", "my.lab.Method"), "method._target_: unknown method class 'my.lab.Method'"),
    (_del("method.fake_score_lr_scheduler"), "method.fake_score_lr_scheduler: missing; FastVideo's DMD2Method "
                                              "requires it"),
    (_set("method.fake_score_learning_rate", 0), "method.fake_score_learning_rate: is 0"),
    (_set("method.generator_update_intervall", 5), "method.generator_update_intervall: unknown key for method "
                                                   "'dmd2'; did you mean 'generator_update_interval'"),
    (_set("method.min_timestep_ratio", 1.5), "method.min_timestep_ratio: is 1.5; must be in [0, 1]"),
    (_set("method.cfg_uncond", {"text": "zero"}), "method.cfg_uncond.text: is 'zero'"),
    (_set("method.attn_kind", "vsa"), "method.attn_kind: video sparse attention"),
    (_del("models.student._target_"), "models.student._target_: missing"),
    (_del("models.critic.init_from"), "models.critic.init_from: missing"),
    (_set("models.student.init_from", 3), "models.student.init_from: must be a string"),
    (_set("models.student.family", "wan"), "models.student.family: unknown key"),
    (_set("models.student.flow_shift", -1), "models.student.flow_shift"),
    (_set("models.student.trainable", "false"), "models.student.trainable: must be a YAML bool"),
    (_set("models.teacher.trainable", True), "models.teacher.trainable: must be false for method 'dmd2'"),
    (_set("models.student.init_from_checkpoint", "ckpt"), "models.student.init_from_checkpoint: FastVideo dropped"),
    (_set("models.student.attention_backend", "VIDEO_SPARSE_ATTN"), "models.student.attention_backend: is "
                                                                    "'VIDEO_SPARSE_ATTN': video sparse attention"),
    (_set("models.student.attention_backend", "FAST"), "models.student.attention_backend: is 'FAST'"),
    (_set("models.student.enable_gradient_checkpointing_type", "ops"), "models: trainable roles ask for different "
                                                                       "enable_gradient_checkpointing_type"),
    (_set("models.student._target_", "fastvideo.train.models.wan.Wan"), "models.student._target_: unknown model "
                                                                        "class"),
    (_set("models.coach", {"_target_": "fastvideo.train.models.wan.WanModel", "init_from": "x"}),
     "models.coach: method 'dmd2' does not use a role named 'coach'"),
    (_set("recipe", {"family": "wan", "method": "dmd2"}), "recipe: belongs to the older schema"),
    (_set("callbacks.logger", {}), "callbacks.logger: unknown callback 'logger'"),
    (_set("callbacks.clip", {"_target_": "fastvideo.train.callbacks.GradNormClipCallback"}),
     "a second grad_clip callback"),
    (_set("callbacks.validation.pipeline_target", "fastvideo.pipelines.basic.wan.wan_causal_pipeline."
          "WanCausalPipeline"), "callbacks.validation.pipeline_target: fastvideo.pipelines"),
    (_del("callbacks.validation.dataset_file"), "callbacks.validation.dataset_file: missing"),
    (_set("callbacks.validation.num_inference", 4), "callbacks.validation.num_inference: unknown key"),
    (_set("callbacks.validation.num_videos_per_prompt", 2), "callbacks.validation.num_videos_per_prompt"),
    (_set("callbacks.validation.sampling_timesteps", [1000, 500]), "callbacks.validation.sampling_timesteps: fvjax's "
                                                                   "few-step validation samples"),
    (_set("callbacks.validation.metrics", True), "callbacks.validation.metrics: VBench"),
    (_set("callbacks.validation.sampling_steps", [8]), "callbacks.validation.sampling_steps: is 8 but DMD2 "
                                                       "validation samples the 4-step"),
    (_set("callbacks.ema.decay", 1.5), "callbacks.ema.decay: is 1.5; must be in [0, 1)"),
    (_set("callbacks.grad_clip.max_norm", 1.0), "callbacks.grad_clip.max_norm: unknown key; did you mean "
                                                "'max_grad_norm'"),
    (_set("pipeline.ti2v_task", True), "pipeline.ti2v_task: is True: Wan2.2 text-image-to-video"),
    (_set("pipeline.boundary_ratio", 0.875), "pipeline.boundary_ratio: is 0.875: the Wan2.2 two-expert"),
    (_set("pipeline.dit_config", {"r_embedder_dim": 16}), "pipeline.dit_config.r_embedder_dim: unknown key"),
    (_set("pipeline.flow_shif", 3), "pipeline.flow_shif: unknown key; did you mean 'flow_shift'"),
    (_set("pipeline", "missing.json"), "pipeline: file 'missing.json' not found"),
    (_set("lr", 1), "lr: unknown key"),
]


@pytest.mark.parametrize("mutate,needle", MALFORMED, ids=[n.split(":")[0] for _, n in MALFORMED])
def test_malformed_current_schema_recipes_are_one_line_errors(tmp_path, mutate, needle):
    path = _mutated(tmp_path, mutate)
    code, _, err = run(["--config", str(path), "--dry-run"])
    assert_one_line_error(code, err, f"{path}: ", needle)


WAN_PIPELINE_JSON = {   # the fields of FastVideo's fastvideo/configs/wan_1.3B_t2v_pipeline.json
    "embedded_cfg_scale": 6.0, "flow_shift": 3, "dit_cpu_offload": True, "disable_autocast": False,
    "precision": "bf16", "vae_precision": "bf16", "vae_tiling": False, "vae_sp": False,
    "vae_config": {"load_encoder": False, "load_decoder": True, "tile_sample_min_height": 256,
                   "tile_sample_min_width": 256, "tile_sample_min_num_frames": 16, "tile_sample_stride_height": 192,
                   "tile_sample_stride_width": 192, "tile_sample_stride_num_frames": 12, "blend_num_frames": 8,
                   "use_tiling": False, "use_temporal_tiling": False, "use_parallel_tiling": False,
                   "use_feature_cache": True},
    "dit_config": {"prefix": "Wan", "quant_config": None},
    "text_encoder_precisions": ["fp32"],
    "text_encoder_configs": [{"prefix": "t5", "quant_config": None, "lora_config": None}],
    "enable_torch_compile": False, "vae_decode_precision": "bf16", "STA_mode": "STA_inference",
}


@pytest.mark.parametrize("schema", ["phase3", "current"])
def test_fastvideo_wan_pipeline_json_plans_and_lists_its_ignored_fields(tmp_path, schema):
    pipeline = tmp_path / "wan_1.3B_t2v_pipeline.json"
    pipeline.write_text(json.dumps(WAN_PIPELINE_JSON, indent=2))
    if schema == "current":
        path = _mutated(tmp_path, _set("pipeline", str(pipeline)))
    else:
        raw = yaml.safe_load((ROOT / "configs/finetune/wan2.1_t2v_1.3B.yaml").read_text())
        raw.pop("pipeline_config", None)
        raw["pipeline_config_path"] = str(pipeline)
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(raw))
    code, out, err = run(["--config", str(path), "--dry-run"])
    assert code == 0, err
    for field in ("dit_cpu_offload", "precision", "vae_decode_precision", "enable_torch_compile", "STA_mode",
                  "vae_config", "text_encoder_configs", "embedded_cfg_scale"):
        assert f"{field} is accepted but ignored" in out, (field, out)
    assert load_recipe(path).pipeline.flow_shift == 3.0


def test_pipeline_json_with_is_causal_is_refused(tmp_path):
    pipeline = tmp_path / "causal.json"
    pipeline.write_text(json.dumps({**WAN_PIPELINE_JSON, "is_causal": True}))
    path = _mutated(tmp_path, _set("pipeline", str(pipeline)))
    code, _, err = run(["--config", str(path), "--dry-run"])
    assert_one_line_error(code, err, f"{pipeline}: is_causal: is True: a causal pipeline needs a causal student")


def test_null_resume_and_null_timestep_ratios(tmp_path):
    path = _mutated(tmp_path, lambda raw: (_set("training.checkpoint.resume_from_checkpoint", None)(raw),
                                           _set("method.min_timestep_ratio", None)(raw),
                                           _set("method.max_timestep_ratio", None)(raw)))
    recipe = load_recipe(path)
    assert recipe.training.resume_from_checkpoint == ""
    assert (recipe.method_config.min_timestep_ratio, recipe.method_config.max_timestep_ratio) == (0.0, 1.0)
    flat = yaml.safe_load((ROOT / "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml").read_text())
    flat["training"]["resume_from_checkpoint"] = None
    del flat["training"]["min_timestep_ratio"]
    flat["method_config"]["min_timestep_ratio"] = None
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    recipe = load_recipe(tmp_path / "flat.yaml")
    assert recipe.training.resume_from_checkpoint == "" and recipe.method_config.min_timestep_ratio == 0.0


def test_student_shift_trains_and_pipeline_shift_validates(tmp_path):
    """qad stage 1's case: pipeline.flow_shift 1 drives validation, the student's scheduler (3.0) training."""
    ft = yaml.safe_load((RECIPES / "plans" / "finetune_t2v.yaml").read_text())
    ft["pipeline"] = {"flow_shift": 1}
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(ft))
    recipe = load_recipe(path)
    assert recipe.method_config.flow_shift == 3.0 and recipe.pipeline.flow_shift == 1.0
    from fvjax.training.validation import sampler_specs
    assert {spec.shift for spec in sampler_specs(recipe)} == {1.0}


def test_validation_renders_the_ema_weights_when_asked():
    from types import SimpleNamespace

    from fvjax.training.loop import _validated_params
    state = SimpleNamespace(params="raw", ema="ema")
    assert _validated_params(state, SimpleNamespace(use_ema=True)) == "ema"
    assert _validated_params(state, SimpleNamespace(use_ema=False)) == "raw"
    assert _validated_params(SimpleNamespace(params="raw", ema=None), SimpleNamespace(use_ema=True)) == "raw"
    assert load_recipe(RECIPES / "plans" / "dmd2_t2v.yaml").training.use_ema   # the ema callback
    raw = yaml.safe_load((RECIPES / "plans" / "dmd2_t2v.yaml").read_text())
    raw["callbacks"]["ema"]["validate"] = False                                 # fvjax key: legacy use_ema off
    assert not parse_recipe(yaml.safe_dump(raw), "r.yaml").training.use_ema

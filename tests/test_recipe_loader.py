"""Every loader rule, accepting and rejecting (fvjax.recipe.load_recipe)."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from fvjax.errors import UserError
from fvjax.methods.dmd2.config import DMD2Config
from fvjax.methods.finetune.config import FinetuneConfig
from fvjax.recipe import ExecutionMode, TrainingArgs, load_recipe, parse_recipe
from fvjax.schema.training_args import TRAINING_FIELDS


def dmd2_base() -> dict:
    return {
        "recipe": {"family": "wan", "method": "dmd2"},
        "models": {"student": {"family": "wan", "path": "tiny", "trainable": True},
                   "teacher": {"path": "tiny", "trainable": False},
                   "critic": {"path": "tiny"}},
        "training": {"num_gpus": 8, "sp_size": 1, "tp_size": 1, "data_path": "data", "output_dir": "out",
                     "max_train_steps": 10, "seed": 7, "train_batch_size": 1, "learning_rate": 1e-5},
        "pipeline_config": {"flow_shift": 8},
        "method_config": {"rollout_mode": "simulate", "dmd_denoising_steps": [1000, 500]},
    }


def finetune_base() -> dict:
    return {
        "recipe": {"family": "wan", "method": "finetune"},
        "models": {"student": {"path": "tiny"}},
        "training": {"num_gpus": 1, "seed": 1, "learning_rate": 1e-5, "data_path": "d", "output_dir": "o"},
        "pipeline_config": {"flow_shift": 3},
        "method_config": {"pred_type": "x0", "loss": "flow_matching"},
    }


def load(raw: dict | str, device_count=None):
    text = raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False)
    return parse_recipe(text, "r.yaml", device_count=device_count)


def rejects(raw, key: str, *words: str, device_count=None) -> UserError:
    with pytest.raises(UserError) as info:
        load(raw, device_count)
    err = info.value
    assert err.where == "r.yaml" or err.where.endswith((".json", ".yaml", ".yml")), err.line()
    assert err.key == key or err.key.startswith(key + "["), err.line()
    for word in words:
        assert word in err.message, err.line()
    return err


def edit(base: dict, fn) -> dict:
    raw = copy.deepcopy(base)
    fn(raw)
    return raw


# ---- structure -------------------------------------------------------------------------------------

def test_base_recipes_load():
    r = load(dmd2_base())
    assert r.family == "wan" and r.method == "dmd2" and r.mode == ExecutionMode.DISTILLATION
    assert isinstance(r.method_config, DMD2Config)
    assert r.trainable_roles == ("student", "critic") and r.frozen_roles == ("teacher",)
    f = load(finetune_base())
    assert f.mode == ExecutionMode.FINETUNING and isinstance(f.method_config, FinetuneConfig)


@pytest.mark.parametrize("key,fix,hint", [
    ("trainig", lambda r: r.__setitem__("trainig", r.pop("training")), "did you mean 'training'"),
    ("method_cfg", lambda r: r.__setitem__("method_cfg", {}), "did you mean 'method_config'"),
    ("training.learning_rat", lambda r: r["training"].__setitem__("learning_rat", 1.0), "'learning_rate'"),
    ("training.fsdp_sharding_strategy", lambda r: r["training"].__setitem__("fsdp_sharding_strategy", "x"),
     "'fsdp_sharding_startegy'"),
    ("models.student.pth", lambda r: r["models"]["student"].__setitem__("pth", "x"), "'path'"),
    ("recipe.famly", lambda r: r["recipe"].__setitem__("famly", "wan"), "'family'"),
    ("method_config.rollout_mod", lambda r: r["method_config"].__setitem__("rollout_mod", "simulate"),
     "'rollout_mode'"),
    ("pipeline_config.flow_shft", lambda r: r["pipeline_config"].__setitem__("flow_shft", 3), "'flow_shift'"),
])
def test_unknown_keys_name_the_dotted_key_and_suggest(key, fix, hint):
    err = rejects(edit(dmd2_base(), fix), key, "unknown key")
    assert hint in err.message


def test_unknown_key_in_distill_section():
    raw = dmd2_base()
    raw["distill"] = {"model": "wan", "methd": "dmd2"}
    del raw["recipe"]
    rejects(raw, "distill.methd", "did you mean 'method'")


@pytest.mark.parametrize("a,b", [("recipe", "distill"), ("models", "roles"),
                                 ("pipeline_config", "pipeline_config_path")])
def test_both_members_of_a_pair_is_an_error(a, b):
    raw = dmd2_base()
    raw.setdefault(a, {})
    raw[b] = "p.json" if b == "pipeline_config_path" else copy.deepcopy(raw[a])
    if b == "distill":
        raw[b] = {"model": "wan", "method": "dmd2"}
    rejects(raw, b, "both")


def test_missing_sections():
    rejects(edit(dmd2_base(), lambda r: r.pop("recipe")), "recipe", "missing")
    rejects(edit(dmd2_base(), lambda r: r.pop("models")), "models", "missing")
    rejects(edit(dmd2_base(), lambda r: r.pop("training")), "training", "missing")
    rejects(edit(dmd2_base(), lambda r: r["recipe"].pop("method")), "recipe.method", "missing")
    # pipeline_config is optional (flow_shift then falls back to the family default for the base model)
    assert load(edit(finetune_base(), lambda r: r.pop("pipeline_config"))).method_config.flow_shift == 3.0


def test_file_level_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "r.txt").write_text("a: 1")
    with pytest.raises(UserError, match=".yaml or .yml"):
        load_recipe(tmp_path / "r.txt")
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(UserError, match="not a regular file"):
        load_recipe(tmp_path / "d.yaml")
    with pytest.raises(UserError, match="empty"):
        load("")
    with pytest.raises(UserError, match="line 2, column 10: mapping values are not allowed"):
        load("training:\n  seed: 1: 2\n")
    with pytest.raises(UserError, match="duplicate key 'seed'"):
        load("training:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(UserError, match="mapping"):
        load("- a\n- b\n")


# ---- types and string forms ---------------------------------------------------------------------------

def test_bool_must_be_a_yaml_bool():
    rejects(edit(dmd2_base(), lambda r: r["models"]["critic"].__setitem__("trainable", "true")),
            "models.critic.trainable", "YAML bool")
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("log_validation", "false")),
            "training.log_validation", "YAML bool")
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("log_validation", 1)),
            "training.log_validation", "YAML bool")
    assert load(edit(dmd2_base(), lambda r: r["training"].update(use_ema=True, ema_decay=0.99))).training.use_ema
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("use_ema", True)), "training.use_ema",
            "there is no EMA (ema_decay is 0)")


def test_string_forms_have_fastvideo_meaning():
    r = load(edit(dmd2_base(), lambda r: r["training"].update(
        betas="0.0,0.999", fake_score_betas="0.0, 0.99", validation_sampling_steps="2",
        validation_guidance_scale="6.0", learning_rate="2e-6", generator_update_interval="5", log_validation=True,
        validation_steps=10)))
    t = r.training
    assert t.betas == (0.0, 0.999) and t.fake_score_betas == (0.0, 0.99)
    assert t.validation_sampling_steps == (2,) and t.validation_guidance_scale == (6.0,)
    assert t.learning_rate == 2e-6 and t.generator_update_interval == 5
    lists = load(edit(dmd2_base(), lambda r: r["training"].update(betas=[0.0, 0.999], validation_sampling_steps=[2])))
    assert lists.training.betas == t.betas and lists.training.validation_sampling_steps == (2,)
    assert load("x: 1\n" if False else yaml.safe_dump(dmd2_base()).replace("1.0e-05", "1e-5")).training.learning_rate == 1e-5


@pytest.mark.parametrize("field,value,words", [
    ("betas", "0.9", "two numbers"), ("betas", [0.9, 1.5], "[0, 1)"), ("betas", "a,b", "number"),
    ("num_gpus", 8.5, "integer"), ("num_gpus", True, "integer"), ("seed", "abc", "integer"),
    ("learning_rate", "fast", "number"), ("learning_rate", [1], "number"), ("output_dir", 5, "string"),
    ("mixed_precision", False, "quote it"), ("mixed_precision", "fp16", "must be one of"), ("trackers", "wandb", "list"),
    ("lr_scheduler", "cosine_annealing", "must be one of"), ("dit_precision", "fp8", "must be one of"),
    ("enable_gradient_checkpointing_type", "some", "must be one of"),
    ("validation_sampling_steps", "8,x", "integer"), ("weighting_scheme", "gauss", "must be one of"),
])
def test_training_types_rejected(field, value, words):
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__(field, value)), f"training.{field}", words)


def test_int_accepts_int_valued_float_and_numeric_string():
    r = load(edit(dmd2_base(), lambda r: r["training"].update(max_train_steps=10.0, dataloader_num_workers="2")))
    assert r.training.max_train_steps == 10 and r.training.dataloader_num_workers == 2


@pytest.mark.parametrize("field,value", [("max_train_steps", -1), ("learning_rate", -1e-5),
                                         ("training_cfg_rate", 1.5), ("ema_decay", 1.0)])
def test_value_ranges(field, value):
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__(field, value)), f"training.{field}")


def test_piecewise_constant_needs_step_rules():
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("lr_scheduler", "piecewise_constant")),
            "training.lr_scheduler", "lr_step_rules")
    assert load(edit(dmd2_base(), lambda r: r["training"].update(
        lr_scheduler="piecewise_constant", lr_step_rules="1:10,0.1"))).training.lr_step_rules == "1:10,0.1"


# ---- TrainingArgs ---------------------------------------------------------------------------------------

SPEC_FIELDS = {  # spec §2: field -> FastVideo dataclass default
    "num_gpus": 1, "tp_size": -1, "sp_size": -1, "hsdp_replicate_dim": 1, "hsdp_shard_dim": -1,
    "dist_timeout": None, "pin_cpu_memory": True, "dit_cpu_offload": False, "dit_precision": "fp32",
    "inference_mode": False, "train_sp_batch_size": 0, "data_path": "", "dataloader_num_workers": 0,
    "train_batch_size": 0, "num_latent_t": 0, "num_height": 0, "num_width": 0, "num_frames": 0,
    "training_cfg_rate": 0.0, "seed": None, "model_path": "", "pretrained_model_name_or_path": "",
    "real_score_model_path": "", "fake_score_model_path": "", "boundary_ratio": 0.875,
    "override_transformer_cls_name": None, "output_dir": "", "checkpoints_total_limit": 0,
    "resume_from_checkpoint": "", "training_state_checkpointing_steps": 0, "weight_only_checkpointing_steps": 0,
    "learning_rate": 0.0, "betas": (0.9, 0.999), "weight_decay": 0.0, "lr_scheduler": "constant",
    "lr_warmup_steps": 0, "lr_num_cycles": 0, "lr_power": 0.0, "min_lr_ratio": 0.5, "max_train_steps": 0,
    "gradient_accumulation_steps": 0, "max_grad_norm": 0.0, "enable_gradient_checkpointing_type": None,
    "mixed_precision": "", "scale_lr": False, "num_train_epochs": 0, "fsdp_sharding_startegy": "",
    "generator_update_interval": 5, "real_score_guidance_scale": 3.5, "min_timestep_ratio": 0.2,
    "max_timestep_ratio": 0.98, "fake_score_learning_rate": 0.0, "fake_score_betas": (0.9, 0.999),
    "fake_score_lr_scheduler": "constant", "simulate_generator_forward": False, "warp_denoising_step": False,
    "ema_decay": 0.0, "ema_start_step": 0, "use_ema": False, "VSA_sparsity": 0.0, "VSA_decay_rate": 0.01,
    "VSA_decay_interval_steps": 1, "dfake_gen_update_ratio": 5, "num_frame_per_block": 3,
    "independent_first_frame": False, "enable_gradient_masking": True, "gradient_mask_last_n_frames": 21,
    "same_step_across_blocks": False, "last_step_only": False, "context_noise": 0, "log_visualization": False,
    "visualization_steps": 0, "weighting_scheme": "", "logit_mean": 0.0, "logit_std": 1.0, "mode_scale": 0.0,
    "precondition_outputs": False, "log_validation": False, "validation_dataset_file": "",
    "validation_steps": 0.0, "validation_sampling_steps": (), "validation_guidance_scale": (), "trackers": (),
    "tracker_project_name": "", "wandb_run_name": "",
}


def test_training_args_has_every_spec_field_with_fastvideo_default():
    defaults = TrainingArgs()
    for name, default in SPEC_FIELDS.items():
        assert name in TRAINING_FIELDS, name
        assert getattr(defaults, name) == default, name
    with pytest.raises(Exception):
        defaults.seed = 3  # frozen
    for field in TRAINING_FIELDS.values():
        assert field.metadata["status"] in ("used", "ignored", "unsupported") and field.metadata["doc"]


def test_ignored_fields_accepted_and_unsupported_ones_rejected_unless_default():
    r = load(edit(dmd2_base(), lambda r: r["training"].update(pin_cpu_memory=False, mixed_precision="bf16",
                                                              train_sp_batch_size=1, lora_path=None)))
    assert {"pin_cpu_memory", "mixed_precision"} <= r.training_given
    # ignored: listed for the dry run, at its default in the experiment (so every form is one object)
    assert r.training.pin_cpu_memory is True and "training.pin_cpu_memory" in dict(r.provenance.ignored)
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("lora_path", "x.safetensors")),
            "training.lora_path", "not supported")
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("VSA_sparsity", 0.9)),
            "training.VSA_sparsity", "not supported")


# ---- seed invariants ---------------------------------------------------------------------------------------

def test_mode_follows_method():
    assert load(edit(dmd2_base(), lambda r: r["training"].__setitem__("mode", "distillation"))).mode.value == \
        "distillation"
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("mode", "finetuning")), "training.mode",
            "follows recipe.method")
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("mode", "inference")), "training.mode")


def test_inference_mode_and_cpu_offload_must_be_false():
    r = load(edit(dmd2_base(), lambda r: r["training"].update(inference_mode=False, dit_cpu_offload=False)))
    assert r.training.inference_mode is False and r.training.dit_cpu_offload is False
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("inference_mode", True)),
            "training.inference_mode", "false")
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("dit_cpu_offload", True)),
            "training.dit_cpu_offload", "false")


def test_dit_precision_default_and_agreement():
    assert load(dmd2_base()).training.dit_precision == "fp32"
    r = load(edit(dmd2_base(), lambda r: r["pipeline_config"].__setitem__("dit_precision", "bf16")))
    assert r.training.dit_precision == "bf16" == r.pipeline.dit_precision
    rejects(edit(dmd2_base(), lambda r: (r["pipeline_config"].__setitem__("dit_precision", "bf16"),
                                         r["training"].__setitem__("dit_precision", "fp32"))),
            "pipeline_config.dit_precision", "keep one")


def test_model_path_defaults_to_student_path():
    raw = edit(dmd2_base(), lambda r: r["models"]["student"].__setitem__("path", "tiny-hd128"))
    r = load(raw)
    assert r.training.model_path == "tiny-hd128" == r.training.pretrained_model_name_or_path
    r = load(edit(raw, lambda r: r["training"].__setitem__("model_path", "Wan-AI/Wan2.1-T2V-14B-Diffusers")))
    assert r.training.model_path == "Wan-AI/Wan2.1-T2V-14B-Diffusers"


def test_legacy_role_paths_must_match_roles():
    assert load(edit(dmd2_base(), lambda r: r["training"].__setitem__("real_score_model_path", "tiny")))
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("fake_score_model_path", "other")),
            "training.fake_score_model_path", "models.critic.path")


def test_seed_is_required():
    rejects(edit(dmd2_base(), lambda r: r["training"].pop("seed")), "training.seed", "missing")


# ---- distributed fill rule ----------------------------------------------------------------------------------

def test_distributed_defaults_follow_the_documented_rule():
    raw = edit(dmd2_base(), lambda r: [r["training"].pop(k) for k in ("num_gpus", "sp_size", "tp_size")])
    one = load(raw).training
    assert (one.num_gpus, one.sp_size, one.tp_size, one.hsdp_replicate_dim, one.hsdp_shard_dim) == (1, 1, 1, 1, 1)
    four = load(raw, device_count=lambda: 4).training
    assert (four.num_gpus, four.sp_size, four.tp_size, four.hsdp_replicate_dim, four.hsdp_shard_dim) == (4, 4, 1, 1, 4)
    called = []
    load(dmd2_base(), device_count=lambda: called.append(1) or 2)
    assert not called  # num_gpus given: the device count is never asked
    r = load(edit(dmd2_base(), lambda r: r["training"].update(hsdp_replicate_dim=2)))
    assert r.training.hsdp_shard_dim == 4 and r.mesh.shape == (2, 4, 1, 1)


@pytest.mark.parametrize("changes,key", [
    ({"sp_size": 3}, "training.sp_size"), ({"tp_size": 3}, "training.tp_size"),
    ({"hsdp_replicate_dim": 2, "hsdp_shard_dim": 2}, "training.hsdp_shard_dim"),
    ({"hsdp_replicate_dim": 3}, "training.hsdp_replicate_dim"), ({"num_gpus": 0}, "training.num_gpus"),
    ({"num_gpus": 12, "hsdp_replicate_dim": 3, "hsdp_shard_dim": 4, "sp_size": 6}, "training.hsdp_shard_dim"),
    ({"sp_size": 0}, "training.sp_size"),
])
def test_distributed_divisibility(changes, key):
    rejects(edit(dmd2_base(), lambda r: r["training"].update(changes)), key)


# ---- method hyper-parameters -----------------------------------------------------------------------------

def test_dmd2_values_from_method_config_training_or_pipeline():
    phase2 = edit(dmd2_base(), lambda r: (r.pop("method_config"), r["training"].update(
        generator_update_interval=3, real_score_guidance_scale=2.5, simulate_generator_forward=True,
        warp_denoising_step=True, min_timestep_ratio=0.02), r["pipeline_config"].__setitem__(
        "dmd_denoising_steps", [1000, 750, 500])))
    c = load(phase2).method_config
    assert c == DMD2Config(rollout_mode="simulate", dmd_denoising_steps=(1000, 750, 500), generator_update_interval=3,
                           real_score_guidance_scale=2.5, warp_denoising_step=True, min_timestep_ratio=0.02,
                           max_timestep_ratio=0.98, flow_shift=8.0,
                           fake_score_learning_rate=load(phase2).training.learning_rate)   # 0: the student's
    moved = load(edit(dmd2_base(), lambda r: r["method_config"].update(
        fake_score_learning_rate=8e-6, fake_score_betas="0.0,0.999")))
    assert moved.method_config.fake_score_learning_rate == 8e-6 == moved.training.fake_score_learning_rate
    assert moved.method_config.fake_score_betas == (0.0, 0.999) == moved.training.fake_score_betas
    fallback = load(dmd2_base())
    assert fallback.method_config.generator_update_interval == 5  # TrainingArgs default
    assert fallback.training.simulate_generator_forward is True  # written back


@pytest.mark.parametrize("training,pipeline,method,key", [
    ({"generator_update_interval": 4}, {}, {"generator_update_interval": 5}, "training.generator_update_interval"),
    ({"simulate_generator_forward": False}, {}, {}, "training.simulate_generator_forward"),
    ({}, {"dmd_denoising_steps": [1000, 400]}, {}, "pipeline_config.dmd_denoising_steps"),
    ({"real_score_guidance_scale": 4.5}, {}, {"real_score_guidance_scale": 3.5}, "training.real_score_guidance_scale"),
])
def test_same_value_in_two_places_must_agree(training, pipeline, method, key):
    raw = dmd2_base()
    raw["training"].update(training)
    raw["pipeline_config"].update(pipeline)
    raw["method_config"].update(method)
    rejects(raw, key, "must agree")
    # the same value twice is fine
    raw2 = dmd2_base()
    raw2["training"]["generator_update_interval"] = 5
    raw2["method_config"]["generator_update_interval"] = 5
    raw2["pipeline_config"]["dmd_denoising_steps"] = [1000, 500]
    assert load(raw2).method_config.generator_update_interval == 5


@pytest.mark.parametrize("value,mode", [("simulate", "simulate"), ("sim", "simulate"), ("data_latent", "data_latent"),
                                        ("data", "data_latent"), ("vae_latent", "data_latent")])
def test_rollout_mode_aliases(value, mode):
    assert load(edit(dmd2_base(), lambda r: r["method_config"].__setitem__("rollout_mode", value))
                ).method_config.rollout_mode == mode


@pytest.mark.parametrize("method_config,key,words", [
    ({"dmd_denoising_steps": [1000, 500]}, "method_config.rollout_mode", "missing"),
    ({"rollout_mode": "ode", "dmd_denoising_steps": [1000]}, "method_config.rollout_mode", "must be one of"),
    ({"rollout_mode": "simulate"}, "method_config.dmd_denoising_steps", "missing"),
    ({"rollout_mode": "simulate", "dmd_denoising_steps": []}, "method_config.dmd_denoising_steps", "non-empty"),
    ({"rollout_mode": "simulate", "dmd_denoising_steps": [500, 1000]}, "method_config.dmd_denoising_steps",
     "decreasing"),
    ({"rollout_mode": "simulate", "dmd_denoising_steps": [1200, 500]}, "method_config.dmd_denoising_steps[0]",
     "1..1000"),
    ({"rollout_mode": "simulate", "dmd_denoising_steps": [1000], "generator_update_interval": True},
     "method_config.generator_update_interval", "integer"),
    ({"rollout_mode": "simulate", "dmd_denoising_steps": [1000], "min_timestep_ratio": 0.9,
      "max_timestep_ratio": 0.5}, "method_config.max_timestep_ratio", "below"),
    ({"rollout_mode": "simulate", "dmd_denoising_steps": [1000], "pred_type": "x0"}, "method_config.pred_type",
     "for method 'dmd2'"),
])
def test_dmd2_method_config_errors(method_config, key, words):
    rejects(edit(dmd2_base(), lambda r: r.__setitem__("method_config", method_config)), key, words)


def test_dmd2_validation_steps_follow_the_schedule():
    assert load(dmd2_base()).training.validation_sampling_steps == (2,)
    assert load(edit(dmd2_base(), lambda r: r["training"].__setitem__("validation_sampling_steps", "2")))
    rejects(edit(dmd2_base(), lambda r: r["training"].__setitem__("validation_sampling_steps", "8")),
            "training.validation_sampling_steps", "2-step")


def test_flow_shift_defaults_to_the_family_value_of_the_base_model():
    raw = edit(dmd2_base(), lambda r: r.pop("pipeline_config"))
    assert load(raw).method_config.flow_shift == 3.0
    raw["models"] = {"student": {"path": "Wan-AI/Wan2.1-T2V-14B-Diffusers"},
                     "teacher": {"path": "tiny", "trainable": False}, "critic": {"path": "tiny"}}
    assert load(raw).method_config.flow_shift == 5.0
    rejects(edit(dmd2_base(), lambda r: r["pipeline_config"].__setitem__("flow_shift", 0)),
            "pipeline_config.flow_shift", "must be in (0, 1000]")


def test_finetune_config():
    r = load(finetune_base())
    assert r.method_config.pred_type == "x0" and r.training.precondition_outputs is True
    same = load(edit(finetune_base(), lambda r: (r["method_config"].pop("pred_type"),
                                                 r["training"].__setitem__("precondition_outputs", True))))
    assert same == r
    rejects(edit(finetune_base(), lambda r: r["training"].__setitem__("precondition_outputs", False)),
            "training.precondition_outputs", "must agree")
    rejects(edit(finetune_base(), lambda r: r["training"].pop("learning_rate")), "training.learning_rate", "> 0")
    rejects(edit(finetune_base(), lambda r: r["method_config"].__setitem__("attn_kind", "vsa")),
            "method_config.attn_kind", "not supported")
    rejects(edit(finetune_base(), lambda r: r["method_config"].__setitem__("loss", "mse")), "method_config.loss")
    w = load(edit(finetune_base(), lambda r: r["method_config"].update(weighting_scheme="logit_normal", logit_std=2)))
    assert w.method_config.weighting_scheme == "logit_normal" == w.training.weighting_scheme
    assert w.training.logit_std == 2.0


# ---- roles and registries --------------------------------------------------------------------------------

def test_roles_rules():
    r = load(edit(dmd2_base(), lambda r: r["models"]["teacher"].__setitem__("disable_custom_init_weights", True)))
    assert r.roles["student"].family == "wan" and r.roles["critic"].trainable is True
    assert r.roles["teacher"].disable_custom_init_weights is True
    assert r.init_weights_override("student") is None
    r = load(edit(dmd2_base(), lambda r: (r["training"].__setitem__("init_weights_from_safetensors", "w.safetensors"),
                                          r["models"]["critic"].__setitem__("disable_custom_init_weights", True))))
    assert r.init_weights_override("student") == "w.safetensors" and r.init_weights_override("critic") is None
    rejects(edit(dmd2_base(), lambda r: r["models"]["teacher"].__setitem__("trainable", True)),
            "models.teacher.trainable", "fixed reference")
    rejects(edit(dmd2_base(), lambda r: r["models"]["critic"].__setitem__("trainable", False)),
            "models.critic.trainable", "true")
    rejects(edit(dmd2_base(), lambda r: r["models"].pop("critic")), "models.critic", "missing")
    rejects(edit(dmd2_base(), lambda r: r["models"].__setitem__("critc", {"path": "tiny"})), "models.critc",
            "did you mean 'critic'")
    rejects(edit(dmd2_base(), lambda r: r["models"]["student"].pop("path")), "models.student.path", "missing")
    rejects(edit(dmd2_base(), lambda r: r["models"]["student"].__setitem__("path", " ")), "models.student.path",
            "non-empty")
    rejects(edit(dmd2_base(), lambda r: r["models"]["student"].__setitem__("family", "hunyuan")),
            "models.student.family", "available: wan")
    rejects(edit(dmd2_base(), lambda r: r["models"].__setitem__("student", "tiny")), "models.student", "mapping")


def test_roles_is_a_synonym_of_models():
    raw = dmd2_base()
    raw["roles"] = raw.pop("models")
    r = load(raw)
    assert r == load(dmd2_base()) and r.roles_key == "roles"
    rejects(edit(raw, lambda r: r["roles"]["teacher"].__setitem__("trainable", True)), "roles.teacher.trainable")


def test_registries():
    from fvjax.families.registry import available_families, get_family, register_family
    from fvjax.methods.registry import available_methods, get_method, register_method

    DMD2, WAN = get_method("dmd2"), get_family("wan")
    assert {"dmd2", "finetune", "kd", "dfsft"} <= set(available_methods()) and "wan" in available_families()
    assert DMD2.role_names == ("student", "teacher", "critic")
    with pytest.raises(KeyError):
        register_method(DMD2)
    with pytest.raises(KeyError):
        register_family(WAN)
    rejects(edit(dmd2_base(), lambda r: r["recipe"].__setitem__("method", "sds")), "recipe.method",
            f"available: {', '.join(available_methods())}")
    rejects(edit(dmd2_base(), lambda r: r["recipe"].__setitem__("family", "ltx")), "recipe.family",
            "available: wan")


# ---- pipeline config -------------------------------------------------------------------------------------

def test_pipeline_config_path_json_and_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.json").write_text(json.dumps({"flow_shift": 8, "embedded_cfg_scale": 6.0, "vae_config": {}}))
    (tmp_path / "p.yaml").write_text("flow_shift: 8\n")
    inline = load(dmd2_base())
    for name in ("p.json", "p.yaml"):
        raw = edit(dmd2_base(), lambda r: (r.pop("pipeline_config"), r.__setitem__("pipeline_config_path", name)))
        assert load(raw) == inline
    assert load(edit(dmd2_base(), lambda r: r.__setitem__("pipeline_config", "p.json"))) == inline
    (tmp_path / "bad.json").write_text(json.dumps({"flow_shfit": 8}))
    with pytest.raises(UserError) as info:
        load(edit(dmd2_base(), lambda r: (r.pop("pipeline_config"), r.__setitem__("pipeline_config_path", "bad.json"))))
    assert info.value.where == "bad.json" and info.value.key == "flow_shfit"
    (tmp_path / "p.txt").write_text("{}")
    rejects(edit(dmd2_base(), lambda r: (r.pop("pipeline_config"), r.__setitem__("pipeline_config_path", "nope.json"))),
            "pipeline_config_path", "not found")
    with pytest.raises(UserError, match=".json, .yaml or .yml"):
        load(edit(dmd2_base(), lambda r: (r.pop("pipeline_config"), r.__setitem__("pipeline_config_path", "p.txt"))))


def test_pipeline_values():
    r = load(edit(dmd2_base(), lambda r: r["pipeline_config"].update(sampler_kind="sde", embedded_cfg_scale=6.0)))
    assert r.pipeline.sampler_kind == "sde" and r.pipeline.flow_shift == 8.0
    rejects(edit(dmd2_base(), lambda r: r["pipeline_config"].__setitem__("sampler_kind", "euler")),
            "pipeline_config.sampler_kind", "must be one of")


def test_overrides():
    r = load(dmd2_base()).with_overrides(output_dir="elsewhere", resume_from_checkpoint="latest")
    assert r.training.output_dir == "elsewhere" and r.training.resume_from_checkpoint == "latest"

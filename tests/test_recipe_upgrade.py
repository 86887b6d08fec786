"""`python -m fvjax.recipe upgrade`: every recipe form, and FastVideo's legacy launch scripts, written in
FastVideo's current schema load to the recipe they came from; bad inputs are one-line errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fvjax.errors import UserError
from fvjax.recipe import load_recipe, parse_recipe
from fvjax.recipe.__main__ import main
from fvjax.recipe.upgrade import upgrade_path
from fvjax.schema.recipe import Recipe, differences
from training_utils import finetune_recipe, tiny_dmd2_recipe, write_recipe

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("**/*.yaml"))
# FastVideo's own examples, written in its current schema for tests/test_recipe_fastvideo_train.py
CURRENT = sorted((ROOT / "tests/recipes/fastvideo_train/plans").glob("*.yaml"))


def assert_same_run(old: Recipe, new: Recipe) -> None:
    """The upgraded recipe is the same experiment object, field for field."""
    assert differences(old, new) == {}
    assert new == old


def upgrade_text(path: Path) -> str:
    return upgrade_path(path).text


def body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def reload(text: str, tmp_path: Path, name: str = "new.yaml") -> Recipe:
    path = tmp_path / name
    path.write_text(text)
    return load_recipe(path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_upgrades_to_the_same_recipe(path, tmp_path):
    old = load_recipe(path)
    text = upgrade_text(path)
    new = reload(text, tmp_path)
    assert new.form == "fastvideo_train"
    assert_same_run(old, new)
    raw = yaml.safe_load(text)
    assert list(raw) == ["models", "method", "training"] + (["callbacks"] if "callbacks" in raw else []) + ["pipeline"]
    assert all("_target_" in spec and "init_from" in spec for spec in raw["models"].values())
    # idempotent: upgrading the upgraded file gives the same recipe and the same text
    again = upgrade_path(tmp_path / "new.yaml")
    assert again.upgraded == new and body(again.text) == body(text) and not again.left_out
    assert upgrade_text(path) == text   # deterministic


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.stem)
def test_current_schema_recipes_upgrade_to_themselves(path, tmp_path):
    old = load_recipe(path)
    result = upgrade_path(path)
    assert result.upgraded == old and reload(result.text, tmp_path) == old
    # what fvjax accepts and ignores has no place to go: named in the header
    assert result.left_out == tuple(key for key, _ in old.provenance.ignored)
    assert not result.notes and "FastVideo's current schema" in result.text.splitlines()[0]


def test_the_seed_recipe_upgrades_to_the_identical_experiment(tmp_path):
    for name in ("distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml", "distill/wan2.1_t2v_1.3B_dmd2_8steps_phase2.yaml"):
        old = load_recipe(ROOT / "configs" / name)
        text = upgrade_text(ROOT / "configs" / name)
        assert reload(text, tmp_path) == old
        raw = yaml.safe_load(text)
        # the older schemas' values the current schema defaults differently are written out
        assert raw["training"]["model"]["mode_scale"] == 0.0 and raw["training"]["tracker"]["project_name"] == ""


def test_what_was_left_out_is_named_in_the_header(tmp_path):
    path = ROOT / "configs/distill/fastvideo_design_branch_dmd2.yaml"
    result = upgrade_path(path)
    old, new = result.recipe, result.upgraded
    assert new == old and differences(old, new) == {}
    assert result.left_out == ("training.train_sp_batch_size",)
    assert "# Left out (fvjax never reads them): training.train_sp_batch_size." in result.text
    assert "design-branch form" in result.text.splitlines()[0]
    raw = yaml.safe_load(result.text)
    # the older schemas' CFG form and one shift, and fvjax's compute dtype, as fvjax keys
    assert raw["method"]["real_score_guidance_form"] == "fastvideo" and raw["method"]["student_flow_shift"] is None
    assert raw["training"]["model"]["mixed_precision"] == "bf16"
    assert raw["pipeline"] == {"flow_shift": 8.0, "sampler_kind": "sde"}
    assert raw["callbacks"]["validation"]["guidance_scale"] == 6.0


def test_recipes_the_tests_write(tmp_path):
    recipes = {
        "finetune": finetune_recipe("data", tmp_path / "out"),
        "finetune_logit": finetune_recipe("data", tmp_path / "out", weighting_scheme="logit_normal", logit_std=0.5,
                                          ema_decay=0.9, ema_start_step=3, log_steps=4),
        "dmd2": tiny_dmd2_recipe("data", tmp_path / "out"),
        "dmd2_interval1": tiny_dmd2_recipe("data", tmp_path / "out", generator_update_interval=1, seed=5,
                                           init_weights_from_safetensors="w.safetensors"),
    }
    for name, raw in recipes.items():
        path = write_recipe(tmp_path / f"{name}.yaml", raw)
        old = load_recipe(path)
        new = reload(upgrade_path(path).text, tmp_path, f"{name}_new.yaml")
        assert_same_run(old, new)
    new = reload(upgrade_text(tmp_path / "finetune_logit.yaml"), tmp_path, "x.yaml")
    assert (new.method_config.weighting_scheme, new.method_config.logit_std) == ("logit_normal", 0.5)
    assert (new.training.ema_decay, new.training.ema_start_step, new.training.log_steps) == (0.9, 3, 4)
    # the training-wide initial weights are each role's own in both
    old = load_recipe(tmp_path / "dmd2_interval1.yaml")
    new = reload(upgrade_text(tmp_path / "dmd2_interval1.yaml"), tmp_path, "y.yaml")
    assert all(r.init_weights_override(role) == "w.safetensors" for r in (old, new) for role in old.roles)


@pytest.mark.parametrize("training, expect", [
    # W&B is the current schema's default tracker; fvjax names an empty project "fvjax"
    ({"trackers": ["wandb"]}, {"tracker": {"project_name": "fvjax"}}),
    ({"trackers": ["tensorboard"]}, {"tracker": {"trackers": ["tensorboard"], "project_name": ""}}),
    ({"data_path": "a:2,b:1"}, {"data": {"data_path": {"a": 2, "b": 1}}}),
    ({"data_path": ["a", "b"]}, {"data": {"data_path": ["a", "b"]}}),
    ({"lr_scheduler": "piecewise_constant", "lr_step_rules": "1:10,0.1"},
     {"optimizer": {"lr_scheduler": "piecewise_constant", "lr_step_rules": "1:10,0.1"}}),
    ({"num_gpus": 8, "hsdp_replicate_dim": 2, "sp_size": 2}, {"distributed": {"num_gpus": 8, "sp_size": 2,
                                                                             "hsdp_replicate_dim": 2}}),
    ({"resume_from_checkpoint": "latest", "dit_precision": "bf16", "preprocessed_data_type": "t2v",
      "VSA_decay_rate": 0.5}, {"checkpoint": {"resume_from_checkpoint": "latest"}, "dit_precision": "bf16"}),
])
def test_training_values_in_their_current_places(tmp_path, training, expect):
    raw = finetune_recipe("data", tmp_path / "out")
    raw["training"].update(training)
    old = load_recipe(write_recipe(tmp_path / "old.yaml", raw))
    text = upgrade_path(tmp_path / "old.yaml").text
    written = yaml.safe_load(text)["training"]
    for block, values in expect.items():
        got = written.get(block)
        assert (got == values if not isinstance(values, dict) else
                {k: got.get(k) for k in values} == values), written
    new = reload(text, tmp_path)
    assert_same_run(old, new)
    assert new.training.trackers == old.training.trackers


def test_recipe_forms_constructed_recipes(tmp_path):
    phase3 = {
        "recipe": {"family": "wan", "method": "dmd2"},
        "roles": {"student": {"path": "tiny"}, "teacher": {"path": "tiny", "trainable": False},
                  "critic": {"path": "tiny"}},
        "training": {"seed": 3, "betas": [0.0, 0.999], "validation_sampling_steps": [3], "learning_rate": 1e-5},
        "pipeline_config": {"flow_shift": 5},
        "method_config": {"rollout_mode": "data_latent", "dmd_denoising_steps": [1000, 757, 522],
                          "generator_update_interval": 2, "real_score_guidance_scale": 3.0,
                          "warp_denoising_step": True},
    }
    path = write_recipe(tmp_path / "p3.yaml", phase3)
    # batch 0 cannot train (preflight refuses it), and the current schema reads 0 as 1: no upgrade
    with pytest.raises(UserError, match="training.train_batch_size: is 0"):
        upgrade_path(path)
    phase3["training"]["train_batch_size"] = 2
    path = write_recipe(tmp_path / "p3.yaml", phase3)
    result = upgrade_path(path)
    old, new = result.recipe, reload(result.text, tmp_path)
    assert_same_run(old, new)
    # the older schemas' "0: the student's" critic learning rate is the student's in both
    assert new.method_config.fake_score_learning_rate == 1e-5 == old.training.critic_learning_rate
    c = new.method_config
    assert (c.rollout_mode, c.warp_denoising_step, c.flow_shift, c.student_flow_shift) == ("data_latent", True, 5.0, None)
    assert (c.real_score_guidance_scale, c.real_score_guidance_form) == (3.0, "fastvideo")


# ---------------------------------------------------------------------------------------- legacy launch scripts

DMD_SCRIPT = r"""#!/bin/bash
#SBATCH --nodes=2
set -e -x
export MASTER_PORT=29500
nodes=( $(scontrol show hostnames $SLURM_JOB_NODELIST) )
NUM_GPUS=8
MODEL_PATH="Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
DATA_DIR=data/wan_syn
OUT="checkpoints/dmd"

training_args=(
  --tracker_project_name wan_dmd   # W&B
  --output_dir "$OUT"
  --max_train_steps 4000
  --train_batch_size 1
  --train_sp_batch_size 1
  --gradient_accumulation_steps 1
  --num_latent_t 21
  --num_height 480
  --num_width 832
  --num_frames 81
)
parallel_args=(
  --num_gpus 16
  --sp_size 1
  --hsdp_replicate_dim 16
  --hsdp-shard-dim 1
)
model_args=(
  --model_path $MODEL_PATH
  --pretrained_model_name_or_path $MODEL_PATH
  --real_score_model_path ${TEACHER:-Wan-AI/Wan2.1-T2V-14B-Diffusers}
  --fake_score_model_path $MODEL_PATH
)
misc_args=(
  --inference_mode False
  --log_validation
  --validation_dataset_file "$(dirname "$0")/prompts.json"
  --validation_steps 200
  --validation_sampling_steps "3"
  --learning_rate 2e-6
  --mixed_precision "bf16"
  --weight_only_checkpointing_steps 500
  --weight_decay 0.01
  --dit_precision "fp32"
  --ema_start_step 0
  --flow_shift 8
  --seed 1000
  --simulate_generator_forward True
)

srun torchrun \
--nnodes $SLURM_JOB_NUM_NODES \
--nproc_per_node $NUM_GPUS \
--rdzv_backend=c10d \
--rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" \
    fastvideo/training/wan_distillation_pipeline.py \
    "${parallel_args[@]}" \
    "${model_args[@]}" \
    --data_path "$DATA_DIR" --dataloader_num_workers 4 \
    "${training_args[@]}" \
    "${misc_args[@]}" \
    --dmd_denoising_steps '1000,757,522' \
    --min_timestep_ratio 0.02 \
    --max_timestep_ratio 0.98 \
    --real_score_guidance_scale 3.5
"""

FINETUNE_SCRIPT = r"""#!/bin/bash
MODEL_PATH="Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
NUM_GPUS=4
torchrun --nnodes 1 --nproc_per_node $NUM_GPUS \
    fastvideo/training/wan_training_pipeline.py \
    --num_gpus $NUM_GPUS --sp_size $NUM_GPUS --tp_size 1 \
    --model_path $MODEL_PATH --pretrained_model_name_or_path $MODEL_PATH \
    --data_path data/crush_smol --dataloader_num_workers 1 \
    --output_dir "checkpoints/ft" --max_train_steps 5000 \
    --train_batch_size 1 --gradient_accumulation_steps 8 \
    --num_latent_t 20 --num_height 480 --num_width 832 --num_frames 77 \
    --learning_rate 5e-5 --weight_decay 1e-4 \
    --training_cfg_rate 0.1 --not_apply_cfg_solver --num_euler_timesteps 50 \
    --flow_shift 5 \
    --enable_gradient_checkpointing_type "full"
"""


def write_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_legacy_dmd_script(tmp_path):
    path = write_script(tmp_path, "distill_dmd.slurm", DMD_SCRIPT)
    result = upgrade_path(path)
    new = reload(result.text, tmp_path)
    assert result.upgraded == new and new.method == "dmd2"
    t, c = new.training, new.method_config
    assert {n: (r.path, r.trainable, r.disable_custom_init_weights) for n, r in new.roles.items()} == {
        "student": ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", True, False),
        "teacher": ("Wan-AI/Wan2.1-T2V-14B-Diffusers", False, True),
        "critic": ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", True, True)}
    # flags as given
    assert (t.num_gpus, t.sp_size, t.hsdp_replicate_dim, t.hsdp_shard_dim) == (16, 1, 16, 1)
    assert (t.seed, t.learning_rate, t.weight_decay, t.max_train_steps, t.num_latent_t) == (1000, 2e-6, 0.01, 4000, 21)
    assert t.data_path == "data/wan_syn" and t.dataloader_num_workers == 4 and t.output_dir == "checkpoints/dmd"
    assert t.mixed_precision == "bf16" and t.log_validation and t.validation_steps == 200
    assert t.validation_dataset_file == f"{tmp_path}/prompts.json"   # $(dirname "$0")
    assert (t.trackers, t.tracker_project_name) == (("wandb",), "wan_dmd")
    assert c.rollout_mode == "simulate" and c.dmd_denoising_steps == (1000, 757, 522) and c.flow_shift == 8.0
    assert (c.min_timestep_ratio, c.max_timestep_ratio, c.real_score_guidance_scale) == (0.02, 0.98, 3.5)
    assert c.real_score_guidance_form == "fastvideo" and c.student_flow_shift is None
    # the legacy argparse defaults (spec §8), explicit
    assert t.ema_decay == 0.999 and t.ema_start_step == 0          # every DMD script trains with an EMA
    assert t.lr_warmup_steps == 10 and t.weighting_scheme == "uniform" and t.mode_scale == 1.29
    assert c.generator_update_interval == 5                         # TrainingArgs' default (legacy = dataclass)
    assert c.fake_score_learning_rate == 2e-6 and c.fake_score_betas == (0.9, 0.999)   # 0 -> the student's
    assert t.max_grad_norm == 0.0                                   # no --max_grad_norm: no clipping
    raw = yaml.safe_load(result.text)
    assert "grad_clip" not in raw["callbacks"] and raw["callbacks"]["ema"] == {"decay": 0.999, "validate": False}
    assert "--train_sp_batch_size" in result.left_out and "--weight_only_checkpointing_steps" in result.left_out
    assert "Left out (fvjax never reads them): --train_sp_batch_size, --weight_only_checkpointing_steps." in result.text
    assert "--lr_warmup_steps 10" in result.text and "no --max_grad_norm: no clipping" in result.text


def test_legacy_finetune_script(tmp_path):
    path = write_script(tmp_path, "finetune_t2v.sh", FINETUNE_SCRIPT)
    result = upgrade_path(path)
    new = reload(result.text, tmp_path)
    assert result.upgraded == new and new.method == "finetune" and tuple(new.roles) == ("student",)
    t, c = new.training, new.method_config
    assert t.seed == 42                                    # not passed: the legacy argparse default
    assert t.ema_decay == 0.0                              # the legacy finetune pipeline keeps no EMA
    assert t.max_grad_norm == 0.0                          # not passed: no clipping
    assert t.lr_warmup_steps == 10 and (c.weighting_scheme, c.mode_scale) == ("uniform", 1.29)
    assert c.flow_shift == 1.0                             # the legacy loop's unshifted timestep table
    assert (t.num_gpus, t.sp_size, t.gradient_accumulation_steps, t.training_cfg_rate) == (4, 4, 8, 0.1)
    assert t.enable_gradient_checkpointing_type == "full" and t.learning_rate == 5e-5 and t.weight_decay == 1e-4
    assert t.trackers == ("none",) and not t.log_validation       # no --tracker_project_name: no tracker
    assert set(result.left_out) == {"--not_apply_cfg_solver", "--num_euler_timesteps"}
    assert "--seed 42" in result.text


def test_legacy_flag_spellings(tmp_path):
    """Dashes or underscores, --flag=value, booleans bare or 'True'/'false', python -m launches."""
    script = FINETUNE_SCRIPT.replace("torchrun --nnodes 1 --nproc_per_node $NUM_GPUS \\\n    fastvideo/training/"
                                     "wan_training_pipeline.py", "python -m torch.distributed.run --standalone "
                                     "--nproc-per-node=4 -m fastvideo.training.wan_training_pipeline")
    script = script.replace("--learning_rate 5e-5", "--learning-rate=5e-5 --precondition-outputs TRUE "
                                                    "--seed=7 --max_grad_norm 2.0 --log-validation false")
    script = script.replace("--flow_shift 5", "--flow_shift 5 --ema_decay 0.9 --real_score_model_path x")
    result = upgrade_path(write_script(tmp_path, "ft.sh", script))
    new = result.upgraded
    assert new.training.learning_rate == 5e-5 and new.method_config.pred_type == "x0" and new.training.seed == 7
    assert new.training.max_grad_norm == 2.0 and not new.training.log_validation
    # the legacy finetune pipeline keeps no EMA and loads no teacher
    assert new.training.ema_decay == 0.0 and {"--ema_decay", "--real_score_model_path"} <= set(result.left_out)


def test_self_forcing_script_is_refused(tmp_path, capsys):
    script = FINETUNE_SCRIPT.replace("wan_training_pipeline", "wan_self_forcing_distillation_pipeline")
    with pytest.raises(SystemExit) as exc:
        main(["upgrade", str(write_script(tmp_path, "sf.sh", script))])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (f"fvjax: error: {tmp_path}/sf.sh: wan_self_forcing_distillation_pipeline: "
                                       "the upgrade does not read legacy self-forcing scripts; write the recipe "
                                       "in FastVideo's current schema (method: {_target_: ...SelfForcingMethod}, "
                                       "configs/examples/tiny_self_forcing_fastvideo_train.yaml)\n")


# ------------------------------------------------------------------------------------------------- the CLI

def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fvjax.recipe", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_stdout_out_and_help(tmp_path):
    res = run_cli("upgrade", "configs/examples/tiny_finetune.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout == upgrade_text(Path("configs/examples/tiny_finetune.yaml"))
    assert res.stdout.startswith("# Upgraded from configs/examples/tiny_finetune.yaml")
    out = tmp_path / "new.yaml"
    assert main(["upgrade", str(ROOT / "configs/examples/tiny_finetune.yaml"), "--out", str(out)]) == 0
    assert load_recipe(out).form == "fastvideo_train"
    res = run_cli("--help")
    assert res.returncode == 0 and "upgrade" in res.stdout
    res = run_cli("upgrade", "--help")
    assert res.returncode == 0 and "--out NEW.yaml" in res.stdout and "legacy launch script" in res.stdout


BAD_RECIPE = {"recipe": {"family": "wan", "method": "finetune"}, "models": {"student": {"path": "tiny"}},
              "training": {"seed": 1, "learning_rate": 1e-5, "learning_rat": 1}}


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.yaml", ["missing.yaml", "recipe not found"]),
    (lambda d: write_recipe(d / "bad.yaml", BAD_RECIPE), ["bad.yaml: training.learning_rat: unknown key"]),
    (lambda d: write_file(d / "x.txt", "hello"), ["expected a recipe (.yaml or .yml)"]),
    (lambda d: write_file(d / "none.sh", "echo hi\n"), ["none.sh", "no torchrun launch"]),
    (lambda d: write_file(d / "two.sh", FINETUNE_SCRIPT + FINETUNE_SCRIPT), ["launches more than once"]),
    (lambda d: write_file(d / "nodata.sh", FINETUNE_SCRIPT.replace("--data_path data/crush_smol", "")),
     ["nodata.sh: --data_path: missing"]),
    (lambda d: write_file(d / "unset.sh", FINETUNE_SCRIPT.replace("data/crush_smol", "$DATA_DIR")),
     ["--data_path: uses $DATA_DIR, which the script does not set"]),
    (lambda d: write_file(d / "flag.sh", FINETUNE_SCRIPT.replace("--flow_shift 5", "--flow_shfit 5")),
     ["--flow_shfit: not a flag"]),
    (lambda d: write_file(d / "bool.sh", FINETUNE_SCRIPT.replace("--not_apply_cfg_solver", "--log_validation yes")),
     ["--log_validation: is 'yes'"]),
    (lambda d: write_file(d / "lr.sh", FINETUNE_SCRIPT.replace("--learning_rate 5e-5", "--learning_rate fast")),
     ["lr.sh: --learning_rate: must be a number"]),
    (lambda d: write_file(d / "vsa.sh", FINETUNE_SCRIPT.replace("--flow_shift 5", "--VSA_sparsity 0.9")),
     ["vsa.sh: --VSA_sparsity: is not supported"]),
    (lambda d: write_file(d / "dmd.sh", DMD_SCRIPT.replace("--fake_score_model_path $MODEL_PATH", "")),
     ["dmd.sh: --fake_score_model_path: missing"]),
    (lambda d: write_file(d / "vsa_env.sh", "export FASTVIDEO_ATTENTION_BACKEND=VIDEO_SPARSE_ATTN\n" + FINETUNE_SCRIPT),
     ["vsa_env.sh: FASTVIDEO_ATTENTION_BACKEND: is 'VIDEO_SPARSE_ATTN': video sparse attention"]),
    (lambda d: write_file(d / "steps.sh", DMD_SCRIPT.replace('--validation_sampling_steps "3"',
                                                             '--validation_sampling_steps "4"')),
     ["steps.sh: --validation_sampling_steps: is 4 but DMD2 validation samples the 3-step"]),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, make, words):
    path = make(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["upgrade", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fvjax: error: "), err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("argv, words", [
    ([], ["command line", "COMMAND"]),
    (["downgrade", "x.yaml"], ["invalid choice"]),
    (["upgrade"], ["OLD"]),
    (["upgrade", "configs/examples/tiny_finetune.yaml", "--out", "new.txt"], ["--out", ".yaml or .yml"]),
    (["upgrade", "configs/examples/tiny_finetune.yaml", "--out", "configs/examples/tiny_finetune.yaml"],
     ["--out", "is OLD itself"]),
])
def test_bad_command_lines(capsys, monkeypatch, argv, words):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fvjax: error: "), err
    for word in words:
        assert word in err, err


def test_a_recipe_the_upgrade_cannot_write_is_refused(tmp_path):
    raw = finetune_recipe("data", tmp_path, weighting_scheme="mode", mode_scale=0.0)
    path = write_recipe(tmp_path / "mode.yaml", raw)
    with pytest.raises(UserError, match="training.mode_scale: is 0.0, which FastVideo's current schema reads as 1.0"):
        upgrade_path(path)
    raw = finetune_recipe("data", tmp_path, log_validation=True, validation_dataset_file="p.json",
                          validation_steps=10, validation_guidance_scale="3.0,5.0", validation_sampling_steps="8")
    with pytest.raises(UserError, match="validation_guidance_scale: has 2 values"):
        upgrade_path(write_recipe(tmp_path / "g.yaml", raw))


def test_upgrade_of_a_parsed_recipe_matches_parse_recipe(tmp_path):
    """The upgraded text also loads through parse_recipe (no file needed) to the same recipe."""
    result = upgrade_path(ROOT / "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml")
    assert parse_recipe(result.text, "x.yaml") == result.upgraded

"""Values checked by their meaning where they are parsed (issue 17, part): seeds JAX can key, integers
that fit the int32 they become inside a jitted step, known tracker names, whole validation intervals; and
every CLI's own usage errors are the one-line `fvjax: error:` too."""
from __future__ import annotations

import json
import os
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
    ("pipeline_config", "flow_shift", 1e300, "is 1e+300; flow_shift must be in (0, 1000]"),
    ("method_config", "real_score_guidance_scale", 1e9, "is 1e+09; the teacher's guidance scale must be within"),
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


def test_output_dir_problems_are_found_before_training(tmp_path):
    from fvjax.recipe.preflight import unwritable_directory

    (tmp_path / "a_file").write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert unwritable_directory(str(tmp_path / "new" / "run")) is None
        assert "is a file; give a directory" in unwritable_directory(str(tmp_path / "a_file"))
        assert "cannot be created" in unwritable_directory(str(tmp_path / "a_file" / "run"))
        assert "NUL byte" in unwritable_directory("out\x00put")
        assert "longer than" in unwritable_directory("x" * 5000)
        assert "under /proc" in unwritable_directory("/proc/fvjax")
        if os.geteuid() != 0:   # root writes anywhere
            assert "not writable" in unwritable_directory(str(locked / "run"))
    finally:
        locked.chmod(0o700)


def test_a_nonfinite_metric_other_than_a_loss_stops_the_run(tmp_path, capsys):
    from training_utils import make_data, tiny_dmd2_recipe, train_in_process, write_recipe

    import jax.numpy as jnp
    from flax import nnx

    from fvjax.families.registry import get_family
    from fvjax.models.params import params_of
    from fvjax.weights.fvjax_dir import write_fvjax_dir

    data = make_data(tmp_path / "data", num_samples=8)
    # A teacher whose output overflows (its last projection scaled to 1e38): the DMD normaliser becomes
    # infinite while the student's loss (through nan_to_num) and the critic's stay finite. The run must stop.
    family = get_family("wan")
    config = family.presets["tiny-teacher"]
    params = params_of(family.build_model(config, rngs=nnx.Rngs(params=0), param_dtype=jnp.float32,
                                          dtype=jnp.float32))
    params["proj_out"]["bias"] = params["proj_out"]["bias"] + 3e38
    write_fvjax_dir(tmp_path / "teacher", family, config, params)
    recipe = tiny_dmd2_recipe(data, tmp_path / "out", max_train_steps=4, train_batch_size=2,
                              training_state_checkpointing_steps=0)
    recipe["models"]["teacher"]["path"] = str(tmp_path / "teacher")
    with pytest.raises(SystemExit) as stop:
        train_in_process(write_recipe(tmp_path / "r.yaml", recipe))
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fvjax: error: ") and "training stopped at step 2: student/" in err, err
    # metrics.jsonl stays JSON: no Infinity / NaN tokens; a non-finite value is null and named
    text = (tmp_path / "out" / "metrics.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert max(json.loads(line)["step"] for line in text.splitlines()) == 1   # stopped before logging step 2


def test_metrics_jsonl_writes_nonfinite_values_as_null(tmp_path):
    from fvjax.training.metrics_log import MetricsLogger

    logger = MetricsLogger(str(tmp_path), ("none",))
    logger.log(3, {"student/loss": 0.5, "student/dmd_normaliser": float("inf"), "critic/loss": float("nan")})
    logger.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"step": 3, "student/loss": 0.5, "student/dmd_normaliser": None, "critic/loss": None,
                   "nonfinite": ["critic/loss", "student/dmd_normaliser"]}


@pytest.mark.parametrize("text,needle", [
    ("a: " + "[" * 5000 + "]" * 5000, "nested more than 100 levels deep"),
    ("a:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(2000)), "nested more than 100 levels deep"),
    ("? [a, b]\n: 1\n", "a mapping key must be a plain scalar"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("base: &b {x: 1}\nother:\n  <<: *b\n  y: 3\n  y: 4\n", "duplicate key 'y'"),
])
def test_pathological_yaml_is_one_line(text, needle):
    from fvjax.errors import UserError
    from fvjax.recipe.yamlio import parse_yaml

    with pytest.raises(UserError, match=needle) as err:
        parse_yaml(text, "r.yaml")
    assert "\n" not in str(err.value)


def test_a_merge_key_may_be_overridden():
    from fvjax.recipe.yamlio import parse_yaml

    assert parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n", "r.yaml")["other"] == {"x": 3, "y": 2}
    # aliases are shared, not expanded: a "billion laughs" file parses at once
    laughs = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9))
    assert len(parse_yaml(laughs, "r.yaml")) == 10


def test_resuming_another_experiments_checkpoint_is_one_line(tmp_path, capsys):
    from training_utils import finetune_recipe, make_data, train_in_process, write_recipe

    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    recipe = finetune_recipe(data, out, max_train_steps=1, training_state_checkpointing_steps=1)
    assert train_in_process(write_recipe(tmp_path / "a.yaml", recipe)) == 0
    # EMA on: the saved state (no EMA) cannot be this run's
    recipe["training"].update(max_train_steps=2, ema_decay=0.9)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        train_in_process(write_recipe(tmp_path / "b.yaml", recipe), "--resume-from-checkpoint", "latest")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fvjax: error:")]
    assert exit_.value.code == 2 and len(err) == 1, err
    err = err[0]
    assert f"{out}/checkpoints/1: was saved by a different experiment: student/ema/" in err
    assert "resume with the recipe that wrote it" in err


def test_atomic_outputs_clean_up_after_dead_runs_and_report_unwritable_places(tmp_path, capsys):
    from fvjax.errors import UserError
    from fvjax.io.atomic import OWNER, atomic_directory

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / ".out.tmp-abc"             # left by a SIGKILLed conversion on this host
    stale.mkdir()
    import socket
    (stale / OWNER).write_text(f"{socket.gethostname()} {int(dead.stdout)}")
    alive = tmp_path / ".out.tmp-live"            # another conversion, still running (this process)
    alive.mkdir()
    (alive / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}")
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "x").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-live", "out"]
    assert os.listdir(tmp_path / "out") == ["x"]
    assert "removed" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"--dst: cannot create .*file/sub/out"):
        with atomic_directory(tmp_path / "file" / "sub" / "out"):
            pass


def test_the_recipes_video_shape_is_checked_against_the_data(tmp_path):
    from fvjax.recipe import parse_recipe
    from fvjax.recipe.preflight import find_problems
    from training_utils import finetune_recipe, make_data

    import yaml
    data = make_data(tmp_path / "data")                 # latents [16, 3, 8, 8]: 3 frames of 64 x 64
    raw = finetune_recipe(data, tmp_path / "out", num_latent_t=5, num_height=480, num_width=64)
    problems = {p.key: p.message for p in find_problems(parse_recipe(yaml.safe_dump(raw), "r.yaml"))}
    assert "is 5 but" in problems["training.num_latent_t"] and "holds 3 latent frames" in problems["training.num_latent_t"]
    assert "holds 64 x 64 videos" in problems["training.num_height"]
    ok = finetune_recipe(data, tmp_path / "out")
    assert not {p.key for p in find_problems(parse_recipe(yaml.safe_dump(ok), "r.yaml"))} & {
        "training.num_latent_t", "training.num_height"}


def test_a_cli_says_nothing_on_stderr_that_means_nothing_to_the_user():
    """libtpu is installed here (the tpu extra) on a host without TPUs: no probing warnings."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    res = subprocess.run([sys.executable, "-m", "fvjax.train", "--config", "configs/examples/tiny_dmd2.yaml",
                          "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert "dry run OK" in res.stdout
    assert res.stderr == "", res.stderr


def test_hub_ids_not_cached_are_downloaded_by_a_real_run_unless_offline(tmp_path):
    """No network in tests: the dry run names what a run would fetch; a run that cannot reach the hub says
    so in one line (HF_ENDPOINT points at a closed local port); offline, today's missing-input message."""
    recipe = REPO / "tests/recipes/fastvideo_train/plans/wan_t2v_finetune_min.yaml"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT="http://127.0.0.1:9")

    def train(*flags, **extra):
        return subprocess.run([sys.executable, "-m", "fvjax.train", "--config", str(recipe), *flags], cwd=REPO,
                              capture_output=True, text=True, timeout=300, env={**env, **extra})
    dry = train("--dry-run")
    assert dry.returncode == 0 and "download    models.student.init_from: Wan-AI/Wan2.1-T2V-1.3B-Diffusers is not in " \
        "the local Hugging Face cache; a real run downloads it first" in dry.stdout
    assert "weights not available" not in dry.stdout
    real = train("--override-output-dir", str(tmp_path / "out"))
    errors = [line for line in real.stderr.splitlines() if line.startswith("fvjax: error:")]
    assert real.returncode == 2 and len(errors) == 1, real.stderr
    assert "models.student.init_from: Wan-AI/Wan2.1-T2V-1.3B-Diffusers: download from the Hugging Face hub failed" \
        in errors[0]
    offline = train("--dry-run", HF_HUB_OFFLINE="1")
    assert offline.returncode == 0 and "weights not available on this machine" in offline.stdout
    assert "download    " not in offline.stdout

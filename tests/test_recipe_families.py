"""Family registry: what a role's `path` names (Diffusers dir, HF cache entry, fvjax dir, preset, nothing),
read from real files written by diffusers and by `python -m fvjax.convert`, and how the dry-run shows it."""
from __future__ import annotations

import contextlib
import io
import shutil

import pytest
import yaml

from fvjax import convert
from fvjax.families.registry import get_family
from fvjax.families.wan.config import PRESETS
from fvjax.train import main
from wan_torch_reference import torch_model
from weights_util import CFG, make_hf_cache, make_pipeline_dir

HUB_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    single = root / "single"
    torch_model(CFG, seed=0).save_pretrained(single)
    pipeline = make_pipeline_dir(single, root / "pipeline")
    no_weights = root / "no_weights"
    no_weights.mkdir()
    shutil.copy(single / "config.json", no_weights / "config.json")
    fv = root / "fv"
    assert convert.main(["diffusers-to-fvjax", "--src", str(single), "--dst", str(fv), "--no-progress"]) == 0
    cache = root / "hf_cache"
    make_hf_cache(cache, HUB_ID, pipeline)
    return {"root": root, "single": single, "pipeline": pipeline, "no_weights": no_weights, "fv": fv, "cache": cache}


def resolve(path: str):
    return get_family("wan").resolve_model(path, "r.yaml", "models.student.path")


def test_local_directories(dirs):
    for name in ("single", "pipeline"):
        src = resolve(str(dirs[name]))
        assert src.kind == "diffusers" and src.config == CFG and src.weights_present
    fv = resolve(str(dirs["fv"]))
    assert fv.kind == "fvjax" and fv.config == CFG and fv.weights_present
    bare = resolve(str(dirs["no_weights"]))
    assert bare.config == CFG and not bare.weights_present and "diffusion_pytorch_model" in bare.detail


def test_hub_ids_are_read_from_the_local_cache_only(dirs, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["cache"]))
    cached = resolve(HUB_ID)
    assert cached.kind == "diffusers" and cached.config == CFG and cached.weights_present
    missing = resolve("Wan-AI/Wan2.1-T2V-14B-Diffusers")
    assert missing.kind == "unavailable" and not missing.weights_present
    assert missing.config == PRESETS["Wan-AI/Wan2.1-T2V-14B-Diffusers"] and "hf download" in missing.detail


def test_presets_and_unknown_paths():
    tiny = resolve("tiny")
    assert tiny.kind == "preset" and tiny.config == PRESETS["tiny"] and tiny.weights_present
    nowhere = resolve("./no/such/dir")
    assert nowhere.kind == "unavailable" and nowhere.config is None and not nowhere.weights_present


def test_flow_shift_defaults():
    wan = get_family("wan")
    assert wan.default_flow_shift("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == 3.0
    assert wan.default_flow_shift("Wan-AI/Wan2.1-T2V-14B-Diffusers") == 5.0
    assert wan.default_flow_shift("/some/dir") == 3.0


def test_dry_run_shows_where_each_role_comes_from(dirs, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["cache"]))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    recipe = {
        "recipe": {"family": "wan", "method": "dmd2"},
        "roles": {"student": {"path": HUB_ID}, "teacher": {"path": str(dirs["fv"]), "trainable": False},
                  "critic": {"path": "./no/such/dir"}},
        "training": {"num_gpus": 8, "sp_size": 1, "data_path": "data", "output_dir": "o", "seed": 1,
                     "max_train_steps": 2, "train_batch_size": 1, "learning_rate": 1e-5, "num_latent_t": 2,
                     "num_height": 16, "num_width": 16, "num_frames": 5},
        "method_config": {"rollout_mode": "data_latent", "dmd_denoising_steps": [1000, 500]},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", "r.yaml", "--dry-run"]) == 0
    text = out.getvalue()
    assert f"student  trainable {HUB_ID}  [Diffusers weights]" in text
    assert "teacher  frozen" in text and "[fvjax weights]" in text
    assert "critic   trainable ./no/such/dir  [weights not here]  (architecture unknown" in text
    assert "warning: missing input: roles.critic.path" in text
    assert "warning: missing input: roles.student.path" not in text
    # a real run stops at the missing critic
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(["--config", "r.yaml"])
    assert info.value.code == 2 and "r.yaml: roles.critic.path: weights not available" in err.getvalue()

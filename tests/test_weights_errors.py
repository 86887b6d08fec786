"""Bad weights: each defect gives one line naming the file and the key, and exit status 2 from the CLI.

The checkpoints are real safetensors files (written by the safetensors library from a diffusers
model's state dict) with one thing wrong each.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from fvjax import convert
from fvjax.errors import UserError
from fvjax.weights import load_params
from wan_torch_reference import torch_model
from weights_util import CFG, make_pipeline_dir

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("good") / "transformer"
    torch_model(CFG, seed=2).save_pretrained(d)
    return d


def variant(good: Path, root: Path, name: str, edit) -> Path:
    """A copy of the good checkpoint whose state dict went through `edit(dict) -> dict`."""
    d = root / name
    shutil.copytree(good, d)
    tensors = edit(load_file(good / WEIGHTS))
    save_file(tensors, d / WEIGHTS, metadata={"format": "pt"})
    return d


def rewrite(path: Path, edit) -> None:
    path.write_bytes(edit(path.read_bytes()))


def corrupt_json(data: bytes) -> bytes:
    return data[:8] + b"#" * 16 + data[24:]


def huge_header(data: bytes) -> bytes:
    return struct.pack("<Q", len(data) * 4) + data[8:]


def set_shape(t: dict) -> dict:
    t["blocks.1.ffn.net.0.proj.weight"] = np.zeros((CFG.ffn_dim, 16), np.float32)
    return t


def set_dtype(t: dict) -> dict:
    t["blocks.0.attn1.to_q.weight"] = t["blocks.0.attn1.to_q.weight"].astype(np.int32)
    return t


def drop(t: dict) -> dict:
    del t["blocks.2.attn2.norm_k.weight"]
    return t


def add(t: dict) -> dict:
    t["blocks.0.attn2.add_k_proj.weight"] = np.zeros((32, 32), np.float32)
    return t


def cases(good: Path, root: Path) -> dict[str, tuple[Path, str, str, str]]:
    """name -> (path to pass, file that must be named, key that must be named, words of the message)."""
    out = {}
    out["missing key"] = (variant(good, root, "missing", drop), WEIGHTS, "blocks.2.attn2.norm_k.weight", "missing")
    out["unexpected key"] = (variant(good, root, "unexpected", add), WEIGHTS, "blocks.0.attn2.add_k_proj.weight",
                             "unexpected tensor")
    out["wrong shape"] = (variant(good, root, "shape", set_shape), WEIGHTS, "blocks.1.ffn.net.0.proj.weight",
                          "wrong shape [64, 16]")
    out["wrong dtype"] = (variant(good, root, "dtype", set_dtype), WEIGHTS, "blocks.0.attn1.to_q.weight",
                          "wrong dtype I32")
    d = root / "truncated"
    shutil.copytree(good, d)
    rewrite(d / WEIGHTS, lambda b: b[:-1000])
    out["truncated"] = (d, WEIGHTS, "proj_out.weight", "truncated")  # the last tensor in the file's order
    d = root / "corrupt"
    shutil.copytree(good, d)
    rewrite(d / WEIGHTS, corrupt_json)
    out["corrupt header"] = (d, WEIGHTS, "", "corrupt safetensors header: not valid JSON")
    d = root / "huge_header"
    shutil.copytree(good, d)
    rewrite(d / WEIGHTS, huge_header)
    out["header past the end"] = (d, WEIGHTS, "", "truncated or corrupt")
    d = root / "not_wan"
    shutil.copytree(good, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["_class_name"] = "UNet2DConditionModel"
    (d / "config.json").write_text(json.dumps(cfg))
    out["config not wan"] = (d, "config.json", "_class_name", "not a WanTransformer3DModel")
    d = root / "not_wan_pipeline"
    make_pipeline_dir(good, d)
    index = json.loads((d / "model_index.json").read_text())
    index["transformer"] = ["diffusers", "FluxTransformer2DModel"]
    (d / "model_index.json").write_text(json.dumps(index))
    out["pipeline not wan"] = (d, "model_index.json", "transformer", "not a WanTransformer3DModel")
    d = root / "i2v"
    shutil.copytree(good, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["image_dim"] = 1280
    (d / "config.json").write_text(json.dumps(cfg))
    out["i2v config"] = (d, "config.json", "image_dim", "image-to-video")
    # Sharded checkpoints: a shard file gone, a key the index lists but its shard lacks.
    d = root / "sharded_missing_file"
    torch_model(CFG, seed=2).save_pretrained(d, max_shard_size="30KB")
    index = json.loads((d / f"{WEIGHTS}.index.json").read_text())
    key, shard = sorted(index["weight_map"].items())[0]
    (d / shard).unlink()
    out["missing shard file"] = (d, f"{WEIGHTS}.index.json", key, f"shard file {shard} is missing")
    d = root / "sharded_missing_key"
    shutil.copytree(root / "sharded_missing_file", d)
    shutil.copy(good / WEIGHTS, d / shard)  # restore the shard from the single file, then drop one key
    index["weight_map"]["blocks.0.attn1.to_q.bias"] = shard
    tensors = {k: v for k, v in load_file(good / WEIGHTS).items() if index["weight_map"].get(k) == shard}
    tensors.pop("blocks.0.attn1.to_q.bias")
    save_file(tensors, d / shard, metadata={"format": "pt"})
    (d / f"{WEIGHTS}.index.json").write_text(json.dumps(index))
    out["key missing from its shard"] = (d, shard, "blocks.0.attn1.to_q.bias", "listed in")
    out["not a weights dir"] = (root, root.name, "", "not a weights directory")
    out["hub id not cached"] = (Path("fvjax-test/not-cached-wan"), "", "",
                                "no such local directory, and as a Hugging Face hub id not found in the local cache")
    return out


@pytest.fixture(scope="module")
def bad(good, tmp_path_factory):
    return cases(good, tmp_path_factory.mktemp("bad"))


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


CASE_NAMES = ["missing key", "unexpected key", "wrong shape", "wrong dtype", "truncated", "corrupt header",
              "header past the end", "config not wan", "pipeline not wan", "i2v config", "missing shard file",
              "key missing from its shard", "not a weights dir", "hub id not cached"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_weights_one_line_naming_file_and_key(bad, name, tmp_path, capsys):
    path, fname, key, words = bad[name]
    src = str(path) if path.is_absolute() else str(path).replace(os.sep, "/")
    with pytest.raises(UserError) as exc:
        load_params(src)
    line = exc.value.line()
    assert words in line and fname in line and key in line, line
    if name == "hub id not cached":
        assert "fvjax-test/not-cached-wan" in line and "hf download" in line
    dst = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        convert.main(["diffusers-to-fvjax", "--src", src, "--dst", str(dst), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fvjax: error: ") and words in err[0], err
    assert not dst.exists() and list(tmp_path.iterdir()) == []  # nothing written


def test_messages_locate_the_file(bad):
    # The file named is the one to fix: a full path, not just a base name.
    path, _, _, _ = bad["wrong shape"]
    with pytest.raises(UserError) as exc:
        load_params(path)
    assert exc.value.where == str(path / WEIGHTS) and exc.value.key == "blocks.1.ffn.net.0.proj.weight"


def test_bad_fvjax_dir(good, tmp_path, capsys):
    fv = tmp_path / "fv"
    assert convert.main(["diffusers-to-fvjax", "--src", str(good), "--dst", str(fv), "--no-progress"]) == 0
    manifest = json.loads((fv / "fvjax_manifest.json").read_text())
    (fv / "fvjax_manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(UserError, match="fvjax_manifest.json: version: is 99"):
        load_params(fv)
    (fv / "fvjax_manifest.json").write_text(json.dumps(manifest))
    cfg = json.loads((fv / "config.json").read_text())
    (fv / "config.json").write_text(json.dumps({**cfg, "num_layers": 5}))  # config no longer matches params
    with pytest.raises(UserError, match=r"params: blocks/.*: wrong shape \[3, "):
        load_params(fv)
    with pytest.raises(SystemExit) as exc:
        convert.main(["fvjax-to-diffusers", "--src", str(fv), "--dst", str(tmp_path / "out"), "--no-progress"])
    assert exc.value.code == 2 and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:  # the wrong direction
        convert.main(["fvjax-to-diffusers", "--src", str(good), "--dst", str(tmp_path / "out"), "--no-progress"])
    assert exc.value.code == 2 and "not an fvjax weights directory" in capsys.readouterr().err


def test_cli_exit_status_in_a_real_process(bad, tmp_path):
    path, fname, key, _ = bad["truncated"]
    proc = subprocess.run([sys.executable, "-m", "fvjax.convert", "diffusers-to-fvjax", "--src", str(path),
                           "--dst", str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fname in lines[0] and key in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()

"""Test-side helpers for the weights tests: tiny Diffusers checkpoints written by diffusers itself."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from fvjax.families.wan.config import WanConfig

# Different in/out channels and a temporal patch of 2 exercise the patch-embedding and proj_out layouts;
# widths divisible by 8 so the same config shards over 8 CPU devices.
CFG = WanConfig(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, patch_size=(2, 2, 2),
                text_dim=24, freq_dim=16, ffn_dim=64, num_layers=3, rope_max_seq_len=32)


def save_torch_model(model, directory: Path, **kwargs) -> Path:
    model.save_pretrained(directory, **kwargs)
    return directory


def make_pipeline_dir(transformer_dir: Path, directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "_diffusers_version": "0.42.1",
        "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}))
    shutil.copytree(transformer_dir, directory / "transformer")
    return directory


def make_hf_cache(cache: Path, repo_id: str, pipeline_dir: Path) -> Path:
    """A local Hugging Face hub cache holding `pipeline_dir` as the main revision of `repo_id`."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(pipeline_dir, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def safetensors_contents(directory: Path) -> dict[str, tuple[str, tuple, bytes]]:
    """{key: (dtype, shape, raw bytes)} over every safetensors file in `directory`, read by the
    safetensors library itself (not fvjax's reader)."""
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                t = st.get_tensor(key)
                out[key] = (str(t.dtype), tuple(t.shape), t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return out


def random_inputs(config: WanConfig, batch: int = 2, frames: int = 4, h: int = 4, w: int = 6, text: int = 7,
                  seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, config.in_channels, frames, h, w)).astype(np.float32)
    t = rng.uniform(0, 1000, (batch,)).astype(np.float32)
    c = rng.standard_normal((batch, text, config.text_dim)).astype(np.float32)
    return x, t, c

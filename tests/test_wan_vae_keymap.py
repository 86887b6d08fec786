"""The VAE key map against Diffusers' AutoencoderKLWan: every key, order and shape (tiny and, through a
meta-device model, full size), the parameter count, the round trip, and the loader's errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from fvjax.errors import UserError
from fvjax.families.wan.vae import VAE_PRESETS, WanVAEConfig, load_vae_params
from fvjax.models.params import flatten
from fvjax.families.wan.vae.keymap import (vae_params_from_diffusers, vae_params_to_diffusers,
                                           vae_tensor_keys)
from fvjax.families.wan.vae.model import abstract_vae_params, count_vae_params, vae_from_params, vae_params_of
from vae_torch_reference import diffusers_kwargs, save_vae, torch_vae

FULL = VAE_PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
TINY = VAE_PRESETS["tiny"]
SLIM = WanVAEConfig(base_dim=4, num_res_blocks=1, dim_mult=(1, 2, 2, 3), decoder_base_dim=6)


def meta_model(config: WanVAEConfig):
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        return AutoencoderKLWan(**diffusers_kwargs(config))


def assert_keys_match(config: WanVAEConfig, state_dict) -> None:
    keys = vae_tensor_keys(config)
    assert [k.diffusers_key for k in keys] == list(state_dict)  # every key, in state_dict order
    for k in keys:
        assert k.torch_shape == tuple(state_dict[k.diffusers_key].shape), k.diffusers_key
    abstract = flatten(abstract_vae_params(config))
    assert set(abstract) == {k.path for k in keys}  # every fvjax leaf is filled by exactly one tensor
    assert len(keys) == len(abstract)
    for k in keys:
        assert abstract[k.path].shape == k.fvjax_shape, k.dotted_path


@pytest.mark.parametrize("config", [FULL, TINY, SLIM], ids=["full", "tiny", "slim"])
def test_key_map_covers_diffusers(config):
    assert_keys_match(config, meta_model(config).state_dict())


def test_full_size_parameter_count():
    state_dict = meta_model(FULL).state_dict()
    assert len(state_dict) == 194
    assert sum(v.numel() for v in state_dict.values()) == 126_892_531
    assert count_vae_params(abstract_vae_params(FULL)) == 126_892_531


def test_config_round_trip_with_diffusers():
    # Diffusers' defaults are the released Wan2.1 vae/config.json.
    assert WanVAEConfig.from_diffusers_config(dict(meta_model(FULL).config)) == FULL
    for config in (TINY, SLIM):
        dumped = json.loads(json.dumps(config.to_diffusers_config()))
        assert WanVAEConfig.from_diffusers_config(dumped) == config
        assert dict(meta_model(config).config).items() >= diffusers_kwargs(config).items()


@pytest.mark.parametrize("field,value,message", [
    ("clip_output", True, "unknown AutoencoderKLWan config field"),
    ("is_residual", True, "Wan2.1 VAE only"),
    ("patch_size", 2, "Wan2.1 VAE only"),
    ("attn_scales", [0.5], "not implemented"),
    ("temperal_downsample", [False, True], "needs 3"),
    ("temperal_downsample", [True, True, True], "temporal scale 8"),
    ("scale_factor_spatial", 16, "dim_mult gives 8"),
    ("latents_std", [1.0] * 15, "z_dim=16"),
    ("base_dim", 0, "positive integer"),
    ("_class_name", "AutoencoderKL", "not an AutoencoderKLWan"),
])
def test_config_errors_name_the_field(field, value, message):
    cfg = {**FULL.to_diffusers_config(), field: value}
    with pytest.raises(UserError, match=message) as err:
        WanVAEConfig.from_diffusers_config(cfg, where="vae/config.json")
    assert err.value.where == "vae/config.json" and err.value.key == field


def test_round_trip_through_the_model():
    state_dict = {k: v.numpy() for k, v in torch_vae(SLIM, seed=3).state_dict().items()}
    params = vae_params_from_diffusers(SLIM, state_dict)
    model = vae_from_params(SLIM, params)
    back = vae_params_to_diffusers(SLIM, vae_params_of(model))
    assert list(back) == list(state_dict)
    for name, value in state_dict.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value), name


# ---------------------------------------------------------------------------------------------------
# Loader


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    return save_vae(torch_vae(TINY, seed=5), tmp_path_factory.mktemp("vae"))


def weights_of(directory: Path) -> Path:
    return directory / "diffusion_pytorch_model.safetensors"


def edited_copy(vae_dir: Path, tmp_path: Path, edit) -> Path:
    target = tmp_path / "vae"
    shutil.copytree(vae_dir, target)
    tensors = load_file(weights_of(target))
    edit(tensors)
    save_file(tensors, weights_of(target))
    return target


def test_loads_every_accepted_path(vae_dir, tmp_path, monkeypatch):
    reference = {k: v.numpy() for k, v in torch_vae(TINY, seed=5).state_dict().items()}
    config, params = load_vae_params(vae_dir)
    assert config == TINY
    back = vae_params_to_diffusers(config, params)
    assert all(np.array_equal(back[k], v) for k, v in reference.items())
    # A pipeline directory: model_index.json + vae/.
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline",
                                                          "vae": ["diffusers", "AutoencoderKLWan"]}))
    shutil.copytree(vae_dir, pipeline / "vae")
    _, from_pipeline = load_vae_params(pipeline, dtype="bfloat16")
    leaf = from_pipeline["decoder"]["conv_out"]["kernel"]
    assert str(leaf.dtype) == "bfloat16"
    np.testing.assert_array_equal(np.asarray(leaf, np.float32),
                                  np.asarray(params["decoder"]["conv_out"]["kernel"]).astype("bfloat16")
                                  .astype(np.float32))
    # A hub id in the local cache (never downloaded).
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny-wan"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(pipeline, repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert load_vae_params("org/tiny-wan")[0] == TINY
    with pytest.raises(UserError, match="not found in the local cache"):
        load_vae_params("org/absent")


def test_missing_tensor(vae_dir, tmp_path):
    bad = edited_copy(vae_dir, tmp_path, lambda t: t.pop("decoder.mid_block.attentions.0.proj.bias"))
    with pytest.raises(UserError) as err:
        load_vae_params(bad)
    assert (err.value.where, err.value.key) == (str(weights_of(bad)), "decoder.mid_block.attentions.0.proj.bias")
    assert "missing" in err.value.message and "\n" not in str(err.value)


def test_unexpected_tensor(vae_dir, tmp_path):
    bad = edited_copy(vae_dir, tmp_path, lambda t: t.update({"encoder.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(UserError, match="unexpected tensor") as err:
        load_vae_params(bad)
    assert (err.value.where, err.value.key) == (str(weights_of(bad)), "encoder.extra.weight")


def test_wrong_shape(vae_dir, tmp_path):
    key = "encoder.down_blocks.2.resample.1.weight"
    bad = edited_copy(vae_dir, tmp_path, lambda t: t.update({key: t[key][:, :, :2]}))
    with pytest.raises(UserError, match=r"wrong shape \[8, 8, 2, 3\].*needs \[8, 8, 3, 3\]") as err:
        load_vae_params(bad)
    assert (err.value.where, err.value.key) == (str(weights_of(bad)), key)


def test_bad_directories(vae_dir, tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        load_vae_params(tmp_path / "absent")
    with pytest.raises(UserError, match="not a VAE directory"):
        load_vae_params(tmp_path)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(vae_dir / "config.json", pickled / "config.json")
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(UserError, match="only PyTorch pickle weights"):
        load_vae_params(pickled)
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text(json.dumps({"transformer": ["diffusers", "WanTransformer3DModel"]}))
    with pytest.raises(UserError, match="has no VAE") as err:
        load_vae_params(pipeline)
    assert err.value.key == "vae"

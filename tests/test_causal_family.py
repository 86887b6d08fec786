"""The causal Wan as a family (`wan_causal`, a variant of `wan`): registry, weights directories recognised
as causal with no flag (Diffusers config.json of FastVideo's CausalWanTransformer3DModel, fvjax dirs as
training writes them), bidirectional weights as the causal student's start, recipes of both schemas
setting num_frames_per_block / local_attn_size / sink_size."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from fvjax.errors import UserError
from fvjax.families.registry import family_for_class, get_family
from fvjax.families.wan.causal import CausalWanConfig
from fvjax.families.wan.causal.config import PRESETS
from fvjax.recipe.loader import parse_recipe
from fvjax.recipe.preflight import resolve_sources
from fvjax.weights.fvjax_dir import read_fvjax_config, write_fvjax_dir
from fvjax.weights.loading import family_at, load_params, load_transformer

CAUSAL = get_family("wan_causal")
WAN = get_family("wan")


def test_registered_as_a_variant_of_wan():
    assert CAUSAL.kin == WAN.kin == "wan"
    assert family_for_class("CausalWanTransformer3DModel") is CAUSAL
    assert family_for_class("WanTransformer3DModel") is WAN
    assert "fastvideo.train.models.wan.WanCausalModel" in CAUSAL.fastvideo_targets
    assert CAUSAL.tensor_keys(PRESETS["tiny-causal"]) == WAN.tensor_keys(WAN.presets["tiny"])  # same keys
    assert "causal blocks of 3 frames" in CAUSAL.describe(PRESETS["tiny-causal"])
    # MFU's FLOPs: the block-causal pattern keeps 9 * (1 + ... + 7) / 21^2 = 57% of the attention pairs (spec §7)
    big = PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    dense, causal = (f.forward_flops(big, (16, 21, 60, 104), 512) for f in (WAN, CAUSAL))
    n, layers, d = 21 * 1560, big.num_layers, big.inner_dim
    assert causal == pytest.approx(dense - 4 * n * n * d * layers * (1 - 9 * 28 / 441))
    with pytest.raises(UserError, match="rope_cache_policy"):
        CausalWanConfig.from_diffusers_config(dict(big.to_diffusers_config(), rope_cache_policy="relativistic"))


def _random_params(family, config):
    model = family.build_model(config, rngs=__import__("flax").nnx.Rngs(0), param_dtype=np.float32, dtype=np.float32)
    from fvjax.models.params import params_of
    return jax.tree.map(np.asarray, params_of(model))


def test_fvjax_dir_round_trips_family_and_causal_fields(tmp_path):
    config = PRESETS["tiny-causal-window"]
    params = _random_params(CAUSAL, config)
    write_fvjax_dir(tmp_path / "student", CAUSAL, config, params)
    raw = json.loads((tmp_path / "student" / "config.json").read_text())
    assert raw["_class_name"] == "CausalWanTransformer3DModel"
    assert (raw["num_frames_per_block"], raw["local_attn_size"], raw["sink_size"]) == (1, 4, 1)
    assert family_at(tmp_path / "student") is CAUSAL                 # no flag needed
    assert read_fvjax_config(tmp_path / "student")[0] == config
    loaded = load_transformer(tmp_path / "student")
    assert loaded.config == config and type(loaded.module).__name__ == "CausalWanTransformer"


def test_diffusers_dir_with_the_causal_class_is_causal(tmp_path):
    from fvjax.weights.diffusers_writer import write_diffusers_dir
    config = PRESETS["tiny-causal"]
    (tmp_path / "sf").mkdir()
    write_diffusers_dir(tmp_path / "sf", CAUSAL, config, _random_params(CAUSAL, config))
    assert family_at(tmp_path / "sf") is CAUSAL
    assert load_params(tmp_path / "sf")[0] == config


def test_bidirectional_weights_start_a_causal_role(tmp_path):
    config = WAN.presets["tiny"]
    params = _random_params(WAN, config)
    write_fvjax_dir(tmp_path / "bidi", WAN, config, params)
    source = CAUSAL.resolve_model(str(tmp_path / "bidi"), "recipe.yaml", "models.student.path")
    assert source.kind == "fvjax" and source.config == CausalWanConfig.from_wan(config)
    # ...and a causal fvjax dir cannot be given to an unrelated family (there is none; the kin check holds)
    assert WAN.resolve_model(str(tmp_path / "bidi"), "r", "k").config == config


PHASE3 = """
recipe: {family: wan, method: dmd2}
models:
  student: {family: wan_causal, path: tiny-causal, trainable: true, arch: {num_frames_per_block: 1}}
  teacher: {family: wan, path: tiny, trainable: false}
  critic: {family: wan, path: tiny, trainable: true}
training: {num_gpus: 1, data_path: data, train_batch_size: 1, num_latent_t: 3, num_height: 32, num_width: 32,
           num_frames: 9, output_dir: out, max_train_steps: 1, seed: 0, learning_rate: 1.0e-3}
method_config: {dmd_denoising_steps: [1000, 500], rollout_mode: simulate}
"""


def test_phase3_roles_pick_the_causal_family_with_arch_options():
    recipe = parse_recipe(PHASE3, "recipe.yaml")
    assert recipe.roles["student"].family == "wan_causal"
    assert recipe.roles["student"].arch == (("num_frames_per_block", 1),)
    sources = resolve_sources(recipe)
    assert sources["student"].config == CausalWanConfig.from_wan(WAN.presets["tiny"], num_frames_per_block=1)
    assert type(sources["teacher"].config).__name__ == "WanConfig"
    bad = PHASE3.replace("arch: {num_frames_per_block: 1}", "arch: {num_frames_per_block: 5}")
    with pytest.raises(UserError, match="num_frames_per_block"):
        resolve_sources(parse_recipe(bad, "recipe.yaml"))


FASTVIDEO = """
models:
  student: {_target_: fastvideo.train.models.wan.WanCausalModel, init_from: tiny-causal, trainable: true,
            num_frames_per_block: 1}
  teacher: {_target_: fastvideo.train.models.wan.WanModel, init_from: tiny, trainable: false}
  critic: {_target_: fastvideo.train.models.wan.WanModel, init_from: tiny, trainable: true}
method: {_target_: fastvideo.train.methods.distribution_matching.dmd2.DMD2Method, dmd_denoising_steps: [1000, 500],
         rollout_mode: simulate, fake_score_learning_rate: 1.0e-3,
         fake_score_betas: [0.0, 0.999], fake_score_lr_scheduler: constant}
training:
  data: {data_path: data, train_batch_size: 1, seed: 0, num_latent_t: 3, num_height: 32, num_width: 32, num_frames: 9}
  checkpoint: {output_dir: out}
  loop: {max_train_steps: 1}
pipeline: {flow_shift: 5, is_causal: true, dit_config: {local_attn_size: 3, sink_size: 1}}
"""


def test_fastvideo_schema_wan_causal_model_with_its_window():
    recipe = parse_recipe(FASTVIDEO, "recipe.yaml")
    student = recipe.roles["student"]
    assert student.family == "wan_causal"
    assert dict(student.arch) == {"num_frames_per_block": 1, "local_attn_size": 3, "sink_size": 1}
    assert recipe.roles["teacher"].arch == ()
    assert resolve_sources(recipe)["student"].config.local_attn_size == 3
    assert [key for key, _ in recipe.provenance.ignored] == ["pipeline.is_causal"]
    with pytest.raises(UserError, match="num_frames_per_block"):
        parse_recipe(FASTVIDEO.replace("num_frames_per_block: 1", "num_frames_per_block: 4"), "recipe.yaml")
    bidirectional = FASTVIDEO.replace("WanCausalModel, init_from: tiny-causal", "WanModel, init_from: tiny")
    with pytest.raises(UserError, match="WanCausalModel"):
        parse_recipe(bidirectional, "recipe.yaml")
    no_causal = bidirectional.replace(", trainable: true,\n            num_frames_per_block: 1}", ", trainable: true}")
    with pytest.raises(UserError, match="is_causal: is True: a causal pipeline needs a causal student"):
        parse_recipe(no_causal, "recipe.yaml")
    with pytest.raises(UserError, match="local_attn_size"):
        parse_recipe(no_causal.replace(" is_causal: true,", ""), "recipe.yaml")


@pytest.mark.parametrize("text", [FASTVIDEO, PHASE3], ids=["fastvideo", "phase3"])
def test_upgrade_writes_the_causal_role_in_fastvideo_schema(text, tmp_path):
    """The causal student's _target_, num_frames_per_block and pipeline.dit_config window round-trip through
    `python -m fvjax.recipe upgrade` (the upgrade reloads its output and compares the recipes)."""
    from fvjax.recipe.upgrade import upgrade_path

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    upgraded = upgrade_path(path)
    assert upgraded.upgraded == upgraded.recipe
    assert upgraded.left_out == (("pipeline.is_causal",) if text is FASTVIDEO else ())
    assert "fastvideo.train.models.wan.WanCausalModel" in upgraded.text
    assert "num_frames_per_block: 1" in upgraded.text
    assert ("local_attn_size: 3" in upgraded.text) == (text is FASTVIDEO)

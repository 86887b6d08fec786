"""The key map at full size: every key of the published Wan2.1-T2V 1.3B and 14B Diffusers state dicts
(taken from diffusers models built on the meta device: no weights, no download), same order, same
shapes; and its fvjax leaf shapes equal the model's abstract parameter tree."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel

from fvjax.families.wan.config import PRESETS, WanConfig
from fvjax.families.wan.keymap import leaf_shapes, tensor_keys
from fvjax.models.params import flatten
from fvjax.families.wan.transformer import abstract_params

FULL = {
    # preset name: (parameter count, state-dict keys) from shared/spec/wan_architecture.md §0
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": (1_418_996_800, 825),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": (14_288_491_584, 1095),
}


def meta_state_dict(config: WanConfig) -> dict[str, tuple[int, ...]]:
    cfg = config.to_diffusers_config()
    cfg.pop("_class_name")
    with torch.device("meta"):
        model = WanTransformer3DModel(**cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(FULL))
def test_key_map_covers_the_full_size_state_dict(name):
    config = PRESETS[name]
    reference = meta_state_dict(config)
    keys = tensor_keys(config)
    assert [k.diffusers_key for k in keys] == list(reference)  # every key, nothing more, Diffusers' order
    for k in keys:
        assert k.torch_shape == reference[k.diffusers_key], k.diffusers_key
    count, n_keys = FULL[name]
    assert len(keys) == n_keys
    assert sum(int(np.prod(k.torch_shape)) for k in keys) == count


@pytest.mark.parametrize("name", list(FULL) + ["tiny", "tiny-hd128"])
def test_leaf_shapes_equal_the_model_abstract_tree(name):
    config = PRESETS[name]
    abstract = {p: tuple(s.shape) for p, s in flatten(abstract_params(config)).items()}
    assert leaf_shapes(config) == abstract
    if name in FULL:
        assert sum(int(np.prod(s)) for s in abstract.values()) == FULL[name][0]


def test_transforms_invert_each_other():
    rng = np.random.default_rng(0)
    config = WanConfig(num_attention_heads=2, attention_head_dim=8, in_channels=3, out_channels=5,
                       patch_size=(2, 2, 2), text_dim=12, freq_dim=8, ffn_dim=24, num_layers=2)
    for k in tensor_keys(config):
        w = rng.standard_normal(k.torch_shape).astype(np.float32)
        f = k.to_fvjax(w)
        assert f.shape == k.fvjax_shape, k.diffusers_key
        back = k.to_diffusers(f)
        assert back.flags.c_contiguous and np.array_equal(back, w), k.diffusers_key
    patch = next(k for k in tensor_keys(config) if k.diffusers_key == "patch_embedding.weight")
    w = rng.standard_normal(patch.torch_shape).astype(np.float32)
    # kernel[(c, t, h, w) flattened, d] = weight[d, c, t, h, w]: the model's patchify feature order.
    assert patch.to_fvjax(w)[((2 * 2 + 1) * 2 + 0) * 2 + 1, 7] == w[7, 2, 1, 0, 1]


def test_full_size_stacked_leaves():
    shapes = leaf_shapes(PRESETS["Wan-AI/Wan2.1-T2V-14B-Diffusers"])
    assert shapes[("blocks", "ffn", "proj_in", "kernel")] == (40, 5120, 13824)
    assert shapes[("blocks", "scale_shift_table")] == (40, 1, 6, 5120)
    assert shapes[("patch_embedding", "kernel")] == (64, 5120)
    assert shapes[("proj_out", "kernel")] == (5120, 64)

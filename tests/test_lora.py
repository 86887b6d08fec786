"""LoRA against Diffusers + PEFT (the oracle): fvjax's export loaded by `WanPipeline.load_lora_weights`
gives the forward fvjax computes with its adapters, a LoRA made by PEFT in Diffusers and loaded by fvjax
(merged, or as a role's starting factors) gives Diffusers' forward; targets follow FastVideo's rule.

Measured on this CPU (max abs error / max |reference output|, bound asserted 1e-4): fvjax export ->
Diffusers 2.9e-7; Diffusers LoRA -> fvjax merged 3.1e-7, unmerged 2.7e-7 (see the printed figures).
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fvjax.errors import UserError
from fvjax.families.registry import get_family
from fvjax.families.wan.config import WanConfig
from fvjax.lora.build import lora_model
from fvjax.lora.factors import factor_pairs, merged_params, with_factors
from fvjax.lora.loading import merge_lora_file, start_factors
from fvjax.lora.peft_file import METADATA_KEY, read_peft_lora, write_peft_lora
from fvjax.lora.spec import LoraSpec
from fvjax.models.params import params_of
from fvjax.weights.safetensors_io import SafetensorsFile
from wan_torch_reference import fvjax_params, max_rel_err, torch_model

TOL = 1e-4
WAN = get_family("wan")
CONFIG = WanConfig(num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, text_dim=32,
                   freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=64)
# attention and FFN, rank 4, alpha 8 (scale 2: the alpha must survive the round trip)
SPEC = LoraSpec(rank=4, alpha=8.0, target_modules=("to_q", "to_k", "to_v", "to_out", "ffn"))


def inputs(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, CONFIG.in_channels, 3, 4, 6), dtype=np.float32)
    t = np.array([999.0, 250.5], np.float32)
    text = rng.standard_normal((2, 9, CONFIG.text_dim), dtype=np.float32)
    return x, t, text


def torch_forward(model, x, t, text) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(text), return_dict=False)[0].numpy()


def fvjax_forward(graphdef, params, x, t, text) -> np.ndarray:
    return np.asarray(jax.jit(lambda p, *a: nnx.merge(graphdef, p)(*a))(params, x, t, text))


def random_factors(lm, seed: int = 3) -> dict:
    """Trained-looking factors: B non-zero too (a fresh B is zero and would hide a wrong layout)."""
    keys = iter(jax.random.split(jax.random.key(seed), 1000))
    return jax.tree.map(lambda s: 0.2 * jax.random.normal(next(keys), s.shape, s.dtype), lm.abstract_factors)


@pytest.fixture(scope="module")
def base():
    reference = torch_model(CONFIG)
    return reference, jax.tree.map(jnp.asarray, fvjax_params(reference, CONFIG.num_layers))


@pytest.fixture(scope="module")
def lm():
    return lora_model(WAN, CONFIG, SPEC, jnp.float32, where="test", key="lora")


def test_targets_follow_fastvideo_rule(lm):
    names = sorted(n for t in lm.targets for n in t.module_names)
    assert len(names) == CONFIG.num_layers * 10   # 4 + 4 attention projections and 2 FFN Linears per block
    assert "blocks.1.attn1.to_out.0" in names and "blocks.0.ffn.net.0.proj" in names and "blocks.0.ffn.net.2" in names
    assert not any("embedder" in n for n in names)
    # the default list adapts the attention projections only; "embedder" is never adapted, even when named
    default = lora_model(WAN, CONFIG, LoraSpec(4, 4.0), jnp.float32, where="r.yaml", key="models.student.lora")
    assert sorted(n.split(".", 2)[2] for t in default.targets for n in t.module_names[:1]) == sorted(
        f"attn{i}.{p}" for i in (1, 2) for p in ("to_k", "to_out.0", "to_q", "to_v"))
    with pytest.raises(UserError, match=r"r.yaml: models.student.lora.target_modules: \['time_embedder'\] match no"):
        lora_model(WAN, CONFIG, LoraSpec(4, 4.0, ("time_embedder",)), jnp.float32, where="r.yaml",
                   key="models.student.lora")
    with pytest.raises(UserError, match="not every layer of it"):
        lora_model(WAN, CONFIG, LoraSpec(4, 4.0, ("blocks.0.attn1",)), jnp.float32, where="r.yaml",
                   key="models.student.lora")


def test_factor_axes_follow_the_kernels(lm):
    q = lm.factor_axes["blocks"]["attn1"]["to_q"]["lora"]
    out = lm.factor_axes["blocks"]["attn1"]["to_out"]["lora"]
    assert q == {"a": ("layers", "embed", None), "b": ("layers", None, "heads")}
    assert out == {"a": ("layers", "heads", None), "b": ("layers", None, "embed")}


def test_fresh_factors_leave_the_model_unchanged(base, lm):
    reference, params = base
    x, t, text = inputs()
    fresh = lm.init(jax.random.key(0), jnp.float32)
    ours = fvjax_forward(lm.graphdef, with_factors(params, fresh), x, t, text)
    _, rel = max_rel_err(ours, torch_forward(reference, x, t, text))
    assert rel <= TOL


def test_export_loads_in_diffusers(base, lm, tmp_path):
    from diffusers import WanPipeline

    reference, params = base
    factors = random_factors(lm)
    x, t, text = inputs()
    ours = fvjax_forward(lm.graphdef, with_factors(params, factors), x, t, text)
    path = write_peft_lora(tmp_path, list(lm.targets), factors, SPEC.rank, SPEC.alpha)
    assert path.name == "pytorch_lora_weights.safetensors"
    stored = SafetensorsFile(path)
    assert "transformer.blocks.0.attn1.to_q.lora_A.weight" in stored.entries
    assert stored.entries["transformer.blocks.1.ffn.net.0.proj.lora_B.weight"].shape == (CONFIG.ffn_dim, SPEC.rank)
    assert json.loads(stored.metadata[METADATA_KEY])["transformer.lora_alpha"] == 8

    model = torch_model(CONFIG)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=model)
    pipe.load_lora_weights(str(tmp_path), weight_name=path.name)
    expected = torch_forward(model, x, t, text)
    err, rel = max_rel_err(ours, expected)
    print(f"fvjax export -> Diffusers: max abs err {err:.3e}, relative {rel:.3e}")
    assert rel <= TOL
    # the LoRA changes the output well beyond the tolerance (the comparison is not vacuous)
    assert max_rel_err(torch_forward(reference, x, t, text), expected)[1] > 100 * TOL

    # merged full weights (convert / generate) give the same forward as the adapters
    from fvjax.families.wan.transformer import model_from_params
    merged = merged_params(jax.device_get(params), jax.device_get(factors), list(lm.targets), SPEC.scale)
    graphdef = nnx.graphdef(model_from_params(CONFIG, merged))
    assert max_rel_err(fvjax_forward(graphdef, merged, x, t, text), expected)[1] <= TOL
    # and the file reads back exactly
    loaded = read_peft_lora(path)
    for target, a, b in factor_pairs(factors, lm.targets):
        m = loaded.modules[target.module_names[1]]
        np.testing.assert_array_equal(m.a, np.asarray(a)[1])
        np.testing.assert_array_equal(m.b, np.asarray(b)[1])
        assert m.scale == SPEC.scale


@pytest.mark.parametrize("with_alpha", [True, False])
def test_diffusers_lora_loads_in_fvjax(base, lm, tmp_path, with_alpha):
    """A LoRA made by PEFT on Diffusers' model and saved by WanPipeline.save_lora_weights; without the
    adapter metadata Diffusers reads it with alpha = rank (so does fvjax)."""
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    reference, params = base
    model = torch_model(CONFIG)
    config = LoraConfig(r=4, lora_alpha=8 if with_alpha else 4, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"])
    model.add_adapter(config)
    metadata = {"r": 4, "lora_alpha": 8, "target_modules": sorted(config.target_modules)} if with_alpha else None
    WanPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(model),
                                  transformer_lora_adapter_metadata=metadata)
    x, t, text = inputs()
    expected = torch_forward(model, x, t, text)
    loaded = read_peft_lora(tmp_path)

    merged = merge_lora_file(jax.device_get(params), loaded, WAN, CONFIG)
    from fvjax.families.wan.transformer import model_from_params
    graphdef = nnx.graphdef(model_from_params(CONFIG, merged))
    err, rel = max_rel_err(fvjax_forward(graphdef, merged, x, t, text), expected)
    print(f"Diffusers LoRA (alpha {'8' if with_alpha else '= rank'}) -> fvjax merged: {err:.3e}, relative {rel:.3e}")
    assert rel <= TOL
    assert max_rel_err(torch_forward(reference, x, t, text), expected)[1] > 100 * TOL

    # as a LoRA role's starting point (alpha 8 in the recipe: B is rescaled when the file's scale differs)
    start = start_factors(loaded, list(lm.targets), SPEC.rank, SPEC.scale, lm.init(jax.random.key(0), jnp.float32),
                          "r.yaml", "models.student.lora")
    err, rel = max_rel_err(fvjax_forward(lm.graphdef, with_factors(params, start), x, t, text), expected)
    print(f"Diffusers LoRA -> fvjax role start (unmerged): {err:.3e}, relative {rel:.3e}")
    assert rel <= TOL


def test_file_errors_are_one_line(tmp_path, lm, base):
    with pytest.raises(UserError, match="not found"):
        read_peft_lora(tmp_path / "missing.safetensors")
    path = write_peft_lora(tmp_path, list(lm.targets), random_factors(lm), SPEC.rank, SPEC.alpha)
    narrow = lora_model(WAN, CONFIG, LoraSpec(4, 8.0, ("to_q",)), jnp.float32, where="r.yaml", key="k")
    with pytest.raises(UserError, match="which the role's lora.target_modules do not select"):
        start_factors(read_peft_lora(path), list(narrow.targets), 4, 2.0, narrow.init(jax.random.key(0), jnp.float32),
                      "r.yaml", "models.student.lora")
    from fvjax.weights.safetensors_io import TensorSpec, write_safetensors
    comfy = tmp_path / "comfy.safetensors"
    tensor = np.zeros((4, 32), np.float32)
    write_safetensors(comfy, [TensorSpec("diffusion_model.blocks.0.self_attn.q.lora_down.weight", tensor.dtype,
                                         tensor.shape)], lambda _: tensor)
    with pytest.raises(UserError, match="original Wan / ComfyUI"):
        read_peft_lora(comfy)
    other = WanConfig(num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16, text_dim=32,
                      freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=64)
    with pytest.raises(UserError, match="the model's is"):
        merge_lora_file(jax.device_get(base[1]), read_peft_lora(path), WAN, other)


def test_convert_merges_a_lora_into_diffusers_weights(base, lm, tmp_path):
    """`python -m fvjax.convert merge-lora --to diffusers`: Diffusers' own model of the merged weights gives
    the forward of Diffusers' model with the LoRA loaded."""
    from diffusers import WanPipeline, WanTransformer3DModel

    from fvjax.convert import main
    from weights_util import save_torch_model

    reference, _ = base
    src = save_torch_model(reference, tmp_path / "base")
    lora = write_peft_lora(tmp_path / "lora", list(lm.targets), random_factors(lm), SPEC.rank, SPEC.alpha)
    assert main(["merge-lora", "--src", str(src), "--lora", str(lora), "--dst", str(tmp_path / "merged"),
                 "--to", "diffusers", "--lora-scale", "0.5"]) == 0
    merged = WanTransformer3DModel.from_pretrained(tmp_path / "merged").float().eval()
    model = torch_model(CONFIG)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=model)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="fvjax")
    pipe.set_adapters(["fvjax"], adapter_weights=[0.5])
    x, t, text = inputs()
    err, rel = max_rel_err(torch_forward(merged, x, t, text), torch_forward(model, x, t, text))
    print(f"merge-lora (scale 0.5) vs Diffusers with the LoRA at weight 0.5: {err:.3e}, relative {rel:.3e}")
    assert rel <= TOL


def test_generate_with_a_lora(tmp_path):
    """`python -m fvjax.generate --lora`: at scale 0 the video is the base model's, at scale 1 it changes."""
    from fvjax.generate import main
    from fvjax.io.video import read_video
    from fvjax.weights.loading import load_transformer
    from tiny_pipeline import write_tiny_wan_pipeline

    pipeline = write_tiny_wan_pipeline(tmp_path / "pipeline")
    config = load_transformer(pipeline).config
    lora = lora_model(WAN, config, SPEC, jnp.float32, where="test", key="lora")
    path = write_peft_lora(tmp_path / "lora", list(lora.targets), random_factors(lora), SPEC.rank, SPEC.alpha)
    videos = {}
    for name, extra in (("base", []), ("scale0", ["--lora", str(path), "--lora-scale", "0"]),
                        ("lora", ["--lora", str(path)])):
        out = tmp_path / f"{name}.mp4"
        assert main(["--model", str(pipeline), "--prompt", "a red cat", "--num-frames", "5", "--height", "32",
                     "--width", "48", "--steps", "2", "--seed", "1", "--out", str(out), "--no-progress", *extra]) == 0
        videos[name] = read_video(out)[0].astype(np.int32)
    np.testing.assert_array_equal(videos["scale0"], videos["base"])
    assert np.abs(videos["lora"] - videos["base"]).mean() > 1.0


def test_lora_on_the_causal_wan(tmp_path):
    """LoRA sits on the parameter tree's Dense layers, so the causal Wan (another family with the same
    kernels) takes it unchanged: its adapters' forward equals its merged weights' forward."""
    causal = get_family("wan_causal")
    config = causal.presets["tiny-causal"]
    lm = lora_model(causal, config, SPEC, jnp.float32, where="test", key="lora")
    assert len(lm.targets) == 10
    base = jax.jit(lambda: params_of(causal.build_model(config, rngs=nnx.Rngs(0), param_dtype=jnp.float32,
                                                        dtype=jnp.float32)))()
    factors = random_factors(lm)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, config.in_channels, 6, 4, 4), dtype=np.float32)
    t, text = np.array([500.0], np.float32), rng.standard_normal((1, 8, config.text_dim), dtype=np.float32)
    ours = fvjax_forward(lm.graphdef, with_factors(base, factors), x, t, text)
    merged = merged_params(jax.device_get(base), jax.device_get(factors), list(lm.targets), SPEC.scale)
    plain = nnx.graphdef(causal.abstract_model(config, jnp.float32))
    expected = fvjax_forward(plain, merged, x, t, text)
    assert max_rel_err(ours, expected)[1] <= TOL
    assert max_rel_err(fvjax_forward(plain, base, x, t, text), expected)[1] > 100 * TOL


def test_convert_merges_a_lora_into_fvjax_weights(base, lm, tmp_path):
    """merge-lora from an fvjax weights dir to an fvjax weights dir: the kernels are base + scale * A B."""
    from fvjax.convert import main
    from fvjax.weights.loading import load_params
    from weights_util import save_torch_model

    reference, params = base
    assert main(["diffusers-to-fvjax", "--src", str(save_torch_model(reference, tmp_path / "base")),
                 "--dst", str(tmp_path / "base_fvjax"), "--no-progress"]) == 0
    factors = random_factors(lm)
    lora = write_peft_lora(tmp_path / "lora", list(lm.targets), factors, SPEC.rank, SPEC.alpha)
    assert main(["merge-lora", "--src", str(tmp_path / "base_fvjax"), "--lora", str(lora),
                 "--dst", str(tmp_path / "merged")]) == 0
    _, merged = load_params(tmp_path / "merged")
    expected = merged_params(jax.device_get(params), jax.device_get(factors), list(lm.targets), SPEC.scale)
    for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(jax.device_get(merged))[0],
                                 jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))

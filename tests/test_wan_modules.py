"""Module-level checks of the Wan DiT (to localise errors): RoPE tables exact vs Diffusers, RoPE
application vs complex multiplication, sinusoid and condition embedder vs Diffusers, one block vs
Diffusers' WanTransformerBlock, attention backends, remat policies (same gradients), sharded forward,
full-size abstract parameter counts and logical axes, input errors."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.transformers.transformer_wan import (WanRotaryPosEmbed, WanTimeTextImageEmbedding,
                                                           WanTransformerBlock)
from flax import nnx
from jax.sharding import Mesh

from fvjax.models.attention import attention, splash_attention, xla_attention
from fvjax.families.wan.block import WanBlock
from fvjax.families.wan.config import PRESETS, WanConfig
from fvjax.families.wan.embeddings import ConditionEmbedder, timestep_sinusoid
from fvjax.families.wan.rope import apply_rope, axis_dims, rope_angles, rope_cos_sin, rope_tables
from fvjax.families.wan.transformer import (WanTransformer, abstract_params, count_params, model_from_params,
                                            param_logical_axes, params_of)
from fvjax.sharding import use_rules
from wan_torch_reference import block_params, condition_embedder_params, max_rel_err

TINY = PRESETS["tiny"]


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    module = module.float().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.ndim == 1 else 0.02))
    return module


def _load(module_fn, params: dict):
    graphdef, state = nnx.split(nnx.eval_shape(module_fn))
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


# ------------------------------------------------------------------------------------------------ RoPE

@pytest.mark.parametrize("head_dim", [128, 64, 20, 16])
def test_rope_tables_exactly_equal_diffusers(head_dim):
    grid = (5, 3, 7)
    ref = WanRotaryPosEmbed(head_dim, (1, 2, 2), max_seq_len=1024)
    cos_ref, sin_ref = ref(torch.zeros(1, 1, grid[0], 2 * grid[1], 2 * grid[2]))
    cos_ref, sin_ref = cos_ref[0, :, 0].numpy(), sin_ref[0, :, 0].numpy()   # [L, head_dim], pairs repeated
    cos, sin = rope_tables(head_dim, grid)
    cos_j, sin_j = rope_cos_sin(head_dim, grid)
    for ours in (cos, np.asarray(cos_j)):
        np.testing.assert_array_equal(ours, cos_ref[:, 0::2])
        np.testing.assert_array_equal(ours, cos_ref[:, 1::2])
    for ours in (sin, np.asarray(sin_j)):
        np.testing.assert_array_equal(ours, sin_ref[:, 0::2])
        np.testing.assert_array_equal(ours, sin_ref[:, 1::2])
    assert sum(axis_dims(head_dim)) == head_dim
    if head_dim == 128:
        assert axis_dims(128) == (44, 42, 42)


def test_rope_start_frame_offsets_frame_positions_only():
    full = rope_angles(128, (6, 2, 3))
    shifted = rope_angles(128, (4, 2, 3), start_frame=2)
    np.testing.assert_array_equal(shifted, full[2 * 6:])
    cos, _ = rope_cos_sin(128, (4, 2, 3), start_frame=2)
    np.testing.assert_array_equal(np.asarray(cos), np.cos(full[12:]).astype(np.float32))
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        rope_angles(16, (3, 2, 2), max_positions=4, start_frame=2)


def test_apply_rope_is_complex_rotation_of_interleaved_pairs():
    rng = np.random.default_rng(0)
    grid, head_dim = (2, 3, 2), 20
    x = rng.standard_normal((2, 12, 3, head_dim)).astype(np.float32)
    angles = rope_angles(head_dim, grid)
    expected = (x[..., 0::2] + 1j * x[..., 1::2]).astype(np.complex128) * np.exp(1j * angles)[None, :, None, :]
    expected = np.stack([expected.real, expected.imag], axis=-1).reshape(x.shape)
    cos, sin = rope_cos_sin(head_dim, grid)
    np.testing.assert_allclose(np.asarray(apply_rope(jnp.asarray(x), cos, sin)), expected, atol=2e-6)
    assert apply_rope(jnp.asarray(x, jnp.bfloat16), cos, sin).dtype == jnp.bfloat16


# ------------------------------------------------------------------------------------------ embedders

@pytest.mark.parametrize("dim", [256, 32, 33])
def test_sinusoid_matches_diffusers(dim):
    t = np.array([0.0, 1.0, 250.5, 999.0], np.float32)
    ref = get_timestep_embedding(torch.from_numpy(t), dim, flip_sin_to_cos=True, downscale_freq_shift=0).numpy()
    ours = np.asarray(timestep_sinusoid(jnp.asarray(t), dim))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-4 * 1.0, rtol=0)  # |args| up to ~1e3: fp32 ulp of the arg


def test_condition_embedder_matches_diffusers():
    cfg = TINY
    d = cfg.inner_dim
    ref = _perturbed(WanTimeTextImageEmbedding(dim=d, time_freq_dim=cfg.freq_dim, time_proj_dim=6 * d,
                                               text_embed_dim=cfg.text_dim))
    sd = {f"ce.{k}": v for k, v in ref.state_dict().items()}
    ours = _load(lambda: ConditionEmbedder(cfg, rngs=nnx.Rngs(0)), condition_embedder_params(sd, "ce"))
    rng = np.random.default_rng(0)
    t = np.array([999.0, 0.0, 321.25], np.float32)
    text = rng.standard_normal((3, 9, cfg.text_dim)).astype(np.float32)
    with torch.no_grad():
        temb_ref, proj_ref, text_ref, _ = ref(torch.from_numpy(t), torch.from_numpy(text))
    temb, mod, text_out = ours(jnp.asarray(t), jnp.asarray(text))
    assert temb.shape == (3, 1, d) and mod.shape == (3, 1, 6, d)
    np.testing.assert_allclose(np.asarray(temb[:, 0]), temb_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(mod[:, 0]).reshape(3, 6 * d), proj_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(text_out), text_ref.numpy(), atol=1e-5)
    # Per-frame timesteps [B, F] embed each frame's value independently.
    temb_f, mod_f, _ = ours(jnp.asarray(np.stack([t, t[::-1]], axis=1)), jnp.asarray(text))
    np.testing.assert_allclose(np.asarray(temb_f[:, 0]), np.asarray(temb[:, 0]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(mod_f[:, 1]), np.asarray(mod[::-1, 0]), atol=1e-6)


# ---------------------------------------------------------------------------------------------- block

@pytest.mark.parametrize("head_dim", [128, 16])
def test_one_block_matches_diffusers(head_dim):
    heads = 2
    cfg = WanConfig(num_attention_heads=heads, attention_head_dim=head_dim, ffn_dim=80, num_layers=1,
                    text_dim=32, freq_dim=32)
    d = cfg.inner_dim
    ref = _perturbed(WanTransformerBlock(d, cfg.ffn_dim, heads, "rms_norm_across_heads", True, cfg.eps))
    sd = {f"b.{k}": v for k, v in ref.state_dict().items()}
    ours = _load(lambda: WanBlock(cfg, rngs=nnx.Rngs(0), attention_backend="xla"), block_params(sd, "b"))
    grid = (3, 2, 4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 24, d)).astype(np.float32)
    context = rng.standard_normal((2, 11, d)).astype(np.float32)
    temb = (0.5 * rng.standard_normal((2, 6, d))).astype(np.float32)
    rope_ref = WanRotaryPosEmbed(head_dim, (1, 2, 2), 1024)(torch.zeros(1, 1, grid[0], 2 * grid[1], 2 * grid[2]))
    with torch.no_grad():
        expected = ref(torch.from_numpy(x), torch.from_numpy(context), torch.from_numpy(temb), rope_ref).numpy()
    out = ours(jnp.asarray(x), jnp.asarray(context), jnp.asarray(temb)[:, None], rope_cos_sin(head_dim, grid))
    err, rel = max_rel_err(out, expected)
    assert rel <= 1e-5, (err, rel)


# ------------------------------------------------------------------------------------------ attention

def _qkv(lq=40, lk=24, heads=2, head_dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal((2, n, heads, head_dim)), jnp.float32) for n in (lq, lk, lk)]


def test_xla_attention_matches_torch_sdpa():
    q, k, v = _qkv()
    t = [torch.from_numpy(np.array(a)).transpose(1, 2) for a in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*t).transpose(1, 2).numpy()
    np.testing.assert_allclose(np.asarray(attention(q, k, v, backend="xla")), expected, atol=2e-6)
    # "auto" on the CPU is xla.
    np.testing.assert_array_equal(np.asarray(attention(q, k, v)), np.asarray(xla_attention(q, k, v)))


def test_splash_attention_interpreted_matches_xla_values_and_gradients():
    q, k, v = _qkv(lq=40, lk=24)
    np.testing.assert_allclose(np.asarray(attention(q, k, v, backend="splash")),
                               np.asarray(xla_attention(q, k, v)), atol=2e-6)
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))  # noqa: E731
    g_splash = jax.grad(loss(lambda *a: splash_attention(*a, interpret=True)), argnums=(0, 1, 2))(q, k, v)
    g_xla = jax.grad(loss(xla_attention), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_splash, g_xla):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_splash_attention_under_shard_map():
    q, k, v = _qkv(lq=32, lk=16, heads=4)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "sp", "tensor"))
    rules = [("act_batch", "data"), ("act_seq", "sp"), ("act_heads", "tensor")]
    with use_rules(mesh, rules):
        out = jax.jit(lambda q, k, v: splash_attention(q, k, v, interpret=True))(q, k, v)
    np.testing.assert_allclose(np.asarray(out), np.asarray(xla_attention(q, k, v)), atol=2e-6)


def test_attention_backend_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, k, v, backend="flash")
    with pytest.raises(ValueError, match="bf16"):
        attention(q, k, v, backend="cudnn")  # fp32 inputs: cuDNN flash cannot take them


# ------------------------------------------------------------------------------ remat and sharding

def _tiny_inputs(cfg=TINY, latent=(2, 4, 4), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, cfg.in_channels, *latent)).astype(np.float32),
            np.array([700.0, 30.0], np.float32),
            rng.standard_normal((2, 6, cfg.text_dim)).astype(np.float32))


def test_remat_policies_give_the_same_gradients():
    cfg = TINY
    params = params_of(WanTransformer(cfg, rngs=nnx.Rngs(3)))
    x, t, text = _tiny_inputs()

    def grads(policy):
        graphdef, state = nnx.split(model_from_params(cfg, params, remat_policy=policy))
        loss = lambda st: jnp.mean(jnp.square(nnx.merge(graphdef, st)(x, t, text)))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(state)

    base_loss, base = grads("none")
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(base))
    # Two policies keep the test fast on 2 cores: save nothing, save named activations.
    for policy in ("full", "save_qkv_attention_out"):
        value, g = grads(policy)
        np.testing.assert_allclose(float(value), float(base_loss), rtol=1e-6)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(base)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_forward_under_sharding_rules_equals_unsharded():
    cfg = TINY
    model = WanTransformer(cfg, rngs=nnx.Rngs(0), attention_backend="xla")
    graphdef, state = nnx.split(model)
    x, t, text = _tiny_inputs()
    fwd = jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st)(x, t, c))
    expected = fwd(state, x, t, text)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "sp", "tensor"))
    rules = [("act_batch", "data"), ("act_seq", "sp"), ("act_heads", "tensor"), ("act_mlp", "tensor"),
             ("act_embed", None), ("act_text", None)]
    with use_rules(mesh, rules):
        sharded = jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st)(x, t, c))(state, x, t, text)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(expected), atol=1e-5)


# -------------------------------------------------------------------------- abstract trees, sizes

@pytest.mark.parametrize("name,expected", [("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 1_418_996_800),
                                           ("Wan-AI/Wan2.1-T2V-14B-Diffusers", 14_288_491_584)])
def test_full_size_parameter_counts_from_abstract_trees(name, expected):
    start = time.perf_counter()
    tree = abstract_params(PRESETS[name])
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(tree))  # nothing allocated
    assert count_params(tree) == expected
    assert time.perf_counter() - start < 30
    cfg = PRESETS[name]
    assert tree["blocks"]["attn1"]["to_q"]["kernel"].shape == (cfg.num_layers, cfg.inner_dim, cfg.inner_dim)
    assert tree["blocks"]["scale_shift_table"].shape == (cfg.num_layers, 1, 6, cfg.inner_dim)
    assert tree["patch_embedding"]["kernel"].shape == (cfg.in_channels * 4, cfg.inner_dim)
    assert tree["proj_out"]["kernel"].shape == (cfg.inner_dim, 4 * cfg.out_channels)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(tree))
    assert all(leaf.dtype == jnp.bfloat16
               for leaf in jax.tree.leaves(abstract_params(PRESETS[name], param_dtype=jnp.bfloat16)))


KNOWN_AXES = {None, "layers", "patch", "embed", "embed_out", "freq", "mod_embed", "text_embed", "heads",
              "mlp", "mod", "patch_out"}


def test_param_logical_axes_cover_every_leaf_with_the_agreed_names():
    cfg = PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    axes = param_logical_axes(cfg)
    shapes = abstract_params(cfg)
    is_axes = lambda x: isinstance(x, tuple)  # noqa: E731
    assert jax.tree.structure(axes, is_leaf=is_axes) == jax.tree.structure(
        jax.tree.map(lambda s: tuple(s.shape), shapes), is_leaf=is_axes)
    for names, leaf in zip(jax.tree.leaves(axes, is_leaf=is_axes), jax.tree.leaves(shapes)):
        assert len(names) == len(leaf.shape) and set(names) <= KNOWN_AXES
    assert axes["patch_embedding"]["kernel"] == ("patch", "embed")
    assert axes["condition_embedder"]["time_proj"]["kernel"] == ("embed", "mod_embed")
    assert axes["condition_embedder"]["text_embedder"]["linear_1"]["kernel"] == ("text_embed", "embed")
    assert axes["blocks"]["attn2"]["to_out"]["kernel"] == ("layers", "heads", "embed")
    assert axes["blocks"]["attn1"]["norm_q"]["scale"] == ("layers", "heads")
    assert axes["blocks"]["ffn"]["proj_in"]["kernel"] == ("layers", "embed", "mlp")
    assert axes["blocks"]["scale_shift_table"] == ("layers", None, "mod", "embed")
    assert axes["scale_shift_table"] == (None, "mod", "embed")
    assert axes["proj_out"]["bias"] == ("patch_out",)


# ------------------------------------------------------------------------------------------- errors

def test_bad_inputs_and_options_are_rejected_clearly():
    model = WanTransformer(TINY, rngs=nnx.Rngs(0))
    x, t, text = _tiny_inputs()
    with pytest.raises(ValueError, match="channels"):
        model(x[:, :3], t, text)
    with pytest.raises(ValueError, match="divisible"):
        model(x[:, :, :, :3], t, text)
    with pytest.raises(ValueError, match="per-frame timestep"):
        model(x, np.zeros((2, 5), np.float32), text)
    with pytest.raises(ValueError, match="remat policy"):
        WanTransformer(TINY, rngs=nnx.Rngs(0), remat_policy="sometimes")

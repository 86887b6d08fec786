"""Test-side helpers: build Diffusers' WanTransformer3DModel (the numerical oracle) with random
weights and copy its weights into fvjax's pure-dict params (our own small mapping, independent of
fvjax/families/wan/keymap.py so the two check each other)."""
from __future__ import annotations

import numpy as np
import torch
from diffusers import WanTransformer3DModel

from fvjax.families.wan.config import WanConfig


def torch_model(config: WanConfig, seed: int = 0) -> WanTransformer3DModel:
    """Diffusers model in fp32 with every parameter perturbed, so that norm scales (init 1) and biases
    (some init 0) are not trivially the identity."""
    torch.manual_seed(seed)
    cfg = config.to_diffusers_config()
    cfg.pop("_class_name")
    model = WanTransformer3DModel(**cfg).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.1 if p.ndim == 1 else 0.02))
    return model


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().copy()


def linear(sd: dict, prefix: str) -> dict:
    return {"kernel": _np(sd[f"{prefix}.weight"]).T, "bias": _np(sd[f"{prefix}.bias"])}


def attention_params(sd: dict, prefix: str) -> dict:
    out = {name: linear(sd, f"{prefix}.{name}") for name in ("to_q", "to_k", "to_v")}
    out["to_out"] = linear(sd, f"{prefix}.to_out.0")
    out["norm_q"] = {"scale": _np(sd[f"{prefix}.norm_q.weight"])}
    out["norm_k"] = {"scale": _np(sd[f"{prefix}.norm_k.weight"])}
    return out


def block_params(sd: dict, prefix: str) -> dict:
    return {
        "attn1": attention_params(sd, f"{prefix}.attn1"),
        "attn2": attention_params(sd, f"{prefix}.attn2"),
        "norm2": {"scale": _np(sd[f"{prefix}.norm2.weight"]), "bias": _np(sd[f"{prefix}.norm2.bias"])},
        "ffn": {"proj_in": linear(sd, f"{prefix}.ffn.net.0.proj"), "proj_out": linear(sd, f"{prefix}.ffn.net.2")},
        "scale_shift_table": _np(sd[f"{prefix}.scale_shift_table"]),
    }


def condition_embedder_params(sd: dict, prefix: str = "condition_embedder") -> dict:
    return {
        "time_embedder": {"linear_1": linear(sd, f"{prefix}.time_embedder.linear_1"),
                          "linear_2": linear(sd, f"{prefix}.time_embedder.linear_2")},
        "time_proj": linear(sd, f"{prefix}.time_proj"),
        "text_embedder": {"linear_1": linear(sd, f"{prefix}.text_embedder.linear_1"),
                          "linear_2": linear(sd, f"{prefix}.text_embedder.linear_2")},
    }


def fvjax_params(model: WanTransformer3DModel, num_layers: int) -> dict:
    sd = model.state_dict()
    w = _np(sd["patch_embedding.weight"])
    blocks = [block_params(sd, f"blocks.{i}") for i in range(num_layers)]
    stacked = jax_tree_stack(blocks)
    return {
        "patch_embedding": {"kernel": w.reshape(w.shape[0], -1).T, "bias": _np(sd["patch_embedding.bias"])},
        "condition_embedder": condition_embedder_params(sd),
        "blocks": stacked,
        "proj_out": linear(sd, "proj_out"),
        "scale_shift_table": _np(sd["scale_shift_table"]),
    }


def jax_tree_stack(trees: list[dict]) -> dict:
    if isinstance(trees[0], dict):
        return {k: jax_tree_stack([t[k] for t in trees]) for k in trees[0]}
    return np.stack(trees, axis=0)


def max_rel_err(ours, ref) -> tuple[float, float]:
    """(max abs error, that error divided by max |ref|)."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    err = float(np.max(np.abs(ours - ref)))
    return err, err / float(np.max(np.abs(ref)))

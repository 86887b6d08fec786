"""What one Wan block keeps for its backward without remat: fvjax (JAX's saved residuals, traced abstractly)
against Diffusers' WanTransformerBlock (PyTorch autograd's saved tensors, a real bf16 forward on the CPU).

    python benchmarks/dit_saved_residuals.py [--tokens 960] [--verbose]

Wan2.1-1.3B widths (D 1536, 12 heads, ffn 8960), bf16, one block, 512 text tokens. Prints bytes kept per
token per layer for token-sized tensors, split into the attention core (fvjax's CPU/XLA attention keeps the
[heads, L, L'] probabilities; a flash kernel such as cuDNN's keeps its output and log-sum-exp instead, as
PyTorch's SDPA does) and everything else. Parameters are not counted on either side.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

D, FFN, HEADS, TEXT = 1536, 8960, 12, 512


def jax_residuals(tokens: int, verbose: bool) -> tuple[float, float]:
    """(attention-probability bytes, other token-sized bytes) per token, fvjax's block with XLA attention."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax._src.ad_checkpoint import saved_residuals   # jax.ad_checkpoint exports only the printing form

    from fvjax.families.wan.block import WanBlock
    from fvjax.families.wan.config import PRESETS
    from fvjax.families.wan.rope import rope_cos_sin

    cfg = PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    grid = (1, tokens // 32, 32)
    block = nnx.eval_shape(lambda: WanBlock(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16,
                                            attention_backend="xla"))
    graphdef, state = nnx.split(block)
    cos, sin = rope_cos_sin(cfg.attention_head_dim, grid, max_positions=cfg.rope_max_seq_len)

    def loss(st, x, context, modulation):
        return nnx.merge(graphdef, st)(x, context, modulation, (cos, sin)).astype(jnp.float32).sum()

    args = (jax.ShapeDtypeStruct((1, tokens, D), jnp.bfloat16), jax.ShapeDtypeStruct((1, TEXT, D), jnp.bfloat16),
            jax.ShapeDtypeStruct((1, 1, 6, D), jnp.float32))
    probs = other = 0
    for aval, why in saved_residuals(loss, state, *args):
        if tokens not in aval.shape:
            continue
        size = math.prod(aval.shape) * aval.dtype.itemsize
        if aval.ndim == 3 and aval.shape[0] == HEADS and aval.shape[2] in (tokens, TEXT):
            probs += size
        else:
            other += size
        if verbose:
            print(f"  jax   {aval.str_short():28s} {size / tokens:9.0f} B/token  {why[:90]}")
    return probs / tokens, other / tokens


def torch_residuals(tokens: int, verbose: bool) -> float:
    """Token-sized bytes per token that autograd saves in Diffusers' block (distinct storages, no parameters)."""
    import torch
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock

    torch.manual_seed(0)
    block = WanTransformerBlock(D, FFN, HEADS, "rms_norm_across_heads", cross_attn_norm=True,
                                eps=1e-6).to(torch.bfloat16).train()
    parameters = {p.untyped_storage().data_ptr() for p in block.parameters()}
    x = torch.randn(1, tokens, D, dtype=torch.bfloat16, requires_grad=True)
    context = torch.randn(1, TEXT, D, dtype=torch.bfloat16)
    temb = torch.randn(1, 6, D, dtype=torch.float32)
    rope = WanRotaryPosEmbed(128, (1, 2, 2), 1024)(torch.zeros(1, 16, 1, 2 * (tokens // 32), 64))
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in parameters and ptr not in saved and tokens in t.shape:
            saved[ptr] = (tuple(t.shape), t.dtype, t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, context, temb, rope)
    if verbose:
        for shape, dtype, size in saved.values():
            print(f"  torch {str(shape):28s} {str(dtype):15s} {size / tokens:9.0f} B/token")
    return sum(size for _, _, size in saved.values()) / tokens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=960, help="a multiple of 32")
    parser.add_argument("--verbose", action="store_true", help="list every saved tensor")
    args = parser.parse_args(argv)
    probs, other = jax_residuals(args.tokens, args.verbose)
    torch_bytes = torch_residuals(args.tokens, args.verbose)
    kib = 1024
    print(f"one block at 1.3B widths, {args.tokens} tokens + {TEXT} text, bf16: KiB kept per token per layer")
    print(f"fvjax without the attention probabilities: {other / kib:.1f} "
          f"(+ {probs / kib:.1f} of XLA attention probabilities, which a flash kernel does not keep)")
    print(f"Diffusers (PyTorch autograd, SDPA): {torch_bytes / kib:.1f}")
    print(f"ratio fvjax / PyTorch (flash attention on both sides): {other / torch_bytes:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

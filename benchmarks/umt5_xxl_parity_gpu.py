"""Full-size UMT5-XXL (Wan2.1's text encoder) on one GPU: fvjax's UMT5Encoder vs transformers'
UMT5EncoderModel with the same random weights (transformers' own init), 512-token prompts, one padded.

    PYTHONPATH=. python3 benchmarks/umt5_xxl_parity_gpu.py [--batch 2]

Reports the max / mean abs difference of last_hidden_state (real tokens only) for fvjax fp32 (highest
matmul precision) and bf16 params+compute, against torch fp32 (TF32 off), and fvjax's encode time.
Needs ~50 GB of GPU memory (both fp32 copies briefly) and transformers + torch with CUDA.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp
import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--preset", default="umt5-xxl", help="tiny: a CPU smoke test of this script")
    parser.add_argument("--layers", type=int, default=0, help="override num_layers (CPU: full width, few layers)")
    parser.add_argument("--vocab", type=int, default=0, help="override vocab_size")
    args = parser.parse_args()

    from transformers import UMT5Config as HFConfig, UMT5EncoderModel

    from fvjax.models.params import nest
    from fvjax.families.wan.text.umt5 import model_from_params
    from fvjax.families.wan.text.umt5_config import PRESETS
    from fvjax.families.wan.text.umt5_keymap import keys_by_leaf, leaf_shape

    torch.backends.cuda.matmul.allow_tf32 = False
    config = PRESETS[args.preset]
    overrides = {k: v for k, v in (("num_layers", args.layers), ("vocab_size", args.vocab)) if v}
    config = dataclasses.replace(config, **overrides)
    hf = HFConfig(**{k: v for k, v in config.to_hf_config().items() if k != "architectures"})
    t0 = time.time()
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = UMT5EncoderModel(hf).eval()
    print(f"torch model built in {time.time() - t0:.1f}s, params {sum(p.numel() for p in model.parameters()):,}",
          flush=True)

    rng = np.random.default_rng(0)
    ids = rng.integers(2, config.vocab_size, size=(args.batch, args.length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[-1, 77:] = 0          # the last prompt is 77 tokens, the rest padding
    ids[-1, 76] = 1            # EOS
    with torch.no_grad():
        ref = model(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)).last_hidden_state
    ref = ref.float().cpu().numpy()

    state = {k: v.detach() for k, v in model.state_dict().items()}
    flat = {}
    for path, keys in keys_by_leaf(config).items():
        buf = np.empty(leaf_shape(config, keys), np.float32)
        for k in keys:
            row = state[k.diffusers_key].cpu().numpy()
            if k.layer is None:
                buf[...] = k.to_fvjax(row)
            else:
                buf[k.layer] = k.to_fvjax(row)
        flat[path] = buf
    del model, state
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"converted in {time.time() - t0:.1f}s", flush=True)

    real = mask.astype(bool)
    for name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
        params = nest({p: jnp.asarray(a, dtype) for p, a in flat.items()})
        encoder = model_from_params(config, params, param_dtype=dtype, dtype=dtype)
        from flax import nnx

        graphdef, st = nnx.split(encoder)
        run = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))
        with jax.default_matmul_precision("highest" if name == "fp32" else "default"):
            t1 = time.time()
            out = np.asarray(run(st, ids.astype(np.int32), mask.astype(np.int32)))
            first = time.time() - t1
            times = []
            for _ in range(3):
                t1 = time.time()
                jax.block_until_ready(run(st, ids.astype(np.int32), mask.astype(np.int32)))
                times.append(time.time() - t1)
        diff = np.abs(out - ref)[real]
        scale = np.abs(ref[real]).mean()
        print(f"{name}: max|diff| {diff.max():.3e}  mean|diff| {diff.mean():.3e}  mean|ref| {scale:.3e}  "
              f"rel(mean) {diff.mean() / scale:.2e}  first call {first:.1f}s  encode {min(times) * 1e3:.1f} ms "
              f"(batch {args.batch} x {args.length})", flush=True)
        del params, encoder, st, out, run
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()

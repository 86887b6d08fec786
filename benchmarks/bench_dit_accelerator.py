"""The DiT on a GPU: attention-backend numerics and forward+backward speed, fvjax (JAX) vs diffusers (PyTorch).

    python benchmarks/bench_dit_accelerator.py                  # checks + Wan2.1-1.3B-width timing
    python benchmarks/bench_dit_accelerator.py --skip-timing    # numerics only

1. Numerics (small config, head_dim 128 = the real 44/42/42 RoPE split, 2 layers, 288 tokens):
   - fp32 (TF32 off on both sides) fvjax vs diffusers on the accelerator: max abs error / output scale;
   - bf16 compute with each attention backend (xla, cudnn) vs the fp32 output, and cudnn vs xla on the
     outputs and on the gradients of every parameter (relative to the largest gradient of each leaf).
2. Timing (Wan2.1-T2V-1.3B widths, 30 layers, bf16 weights and compute, batch 1, latent 16x21x30x52 =
   8190 tokens = 81 frames at 240x416, 512 text tokens): one training step = loss = mean(out^2) and the
   gradient of every parameter. JAX jitted (compile excluded, printed) with xla and cudnn attention;
   PyTorch eager, SDPA (flash) attention, same shapes. Prints median step time, ratio, and model TFLOP/s.
Prints one JSON line per figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


DEVICE, BACKENDS = "cuda", ("xla", "cudnn")


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def rel(a, b) -> float:
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def numerics() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from fvjax.families.wan.config import PRESETS
    from fvjax.families.wan.transformer import model_from_params
    from wan_torch_reference import fvjax_params, torch_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    config = dataclasses.replace(PRESETS["tiny-hd128"], num_layers=2)
    reference = torch_model(config, seed=0)
    params = fvjax_params(reference, config.num_layers)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 3, 16, 24), dtype=np.float32)
    t = np.array([999.0, 250.0], np.float32)
    text = rng.standard_normal((2, 20, config.text_dim), dtype=np.float32)
    text[0, 11:] = 0
    with torch.no_grad():
        expected = reference.to(DEVICE)(*(torch.from_numpy(a).to(DEVICE) for a in (x, t, text)),
                                    return_dict=False)[0].float().cpu().numpy()

    with jax.default_matmul_precision("highest"):
        fp32 = model_from_params(config, params, attention_backend="xla")(jnp.asarray(x), jnp.asarray(t),
                                                                         jnp.asarray(text))
    emit(check="fp32 fvjax vs diffusers on the accelerator", rel_error=rel(fp32, expected), bound=1e-4)

    def loss_and_grads(backend):
        bf16_params = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
        model = model_from_params(config, bf16_params, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16,
                                  attention_backend=backend)
        graphdef, state = nnx.split(model)

        def loss_fn(st):
            out = nnx.merge(graphdef, st)(jnp.asarray(x), jnp.asarray(t), jnp.asarray(text))
            return jnp.mean(jnp.square(out.astype(jnp.float32))), out
        (loss, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state)
        return out, grads

    outs = {}
    for backend in BACKENDS:
        out, grads = loss_and_grads(backend)
        outs[backend] = (out, grads)
        emit(check=f"bf16 {backend} attention vs fp32 diffusers", rel_error=rel(out.astype(jnp.float32), expected),
             bound=2e-2)
    if "cudnn" not in outs:
        return
    (ox, gx), (oc, gc) = outs["xla"], outs["cudnn"]
    worst = max(jax.tree.leaves(jax.tree.map(lambda a, b: rel(a.astype(jnp.float32), b.astype(jnp.float32)), gc, gx)))
    emit(check="bf16 cudnn vs xla", output_rel=rel(oc.astype(jnp.float32), ox.astype(jnp.float32)),
         worst_grad_leaf_rel=worst)


def timing(iters: int, small: bool, runs: list[tuple[str, str]] | None = None, with_torch: bool = True) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import WanTransformer3DModel
    from flax import nnx

    from fvjax.families.wan.config import PRESETS
    from fvjax.families.wan.transformer import WanTransformer, count_params

    config = PRESETS["tiny-hd128" if small else "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    shape = (1, 16, 3, 8, 12) if small else (1, 16, 21, 30, 52)
    tokens = shape[2] * (shape[3] // 2) * (shape[4] // 2)
    text_len = 32 if small else 512
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    t = np.array([500.0], np.float32)
    text = rng.standard_normal((1, text_len, config.text_dim), dtype=np.float32)

    n_params = None
    d, layers = config.inner_dim, config.num_layers

    def model_flops(n):   # 6 N T for the dense part + attention matmuls (fwd 4 S^2 D per self-attn, x3 for bwd)
        return 6 * n * tokens + 3 * layers * (4 * tokens * tokens * d + 4 * tokens * text_len * d)

    results = {}
    # The xla backend materialises [heads, S, S] probabilities per layer (200 GiB at 8190 tokens without
    # remat), so it is timed with full remat; cudnn (flash) without.
    default_runs = [("cudnn", "none"), ("xla", "full")] if "cudnn" in BACKENDS else [("xla", "none")]
    runs = runs or default_runs
    for backend, remat in runs:
        model = WanTransformer(config, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16,
                               attention_backend=backend, remat_policy=remat)
        graphdef, state = nnx.split(model)
        n_params = count_params(nnx.state(model, nnx.Param).to_pure_dict())
        del model
        xj, tj, cj = (jnp.asarray(a, jnp.bfloat16) for a in (x, t, text))

        def loss_fn(st):
            return jnp.mean(jnp.square(nnx.merge(graphdef, st)(xj, tj, cj).astype(jnp.float32)))
        step = jax.jit(jax.value_and_grad(loss_fn))
        start = time.perf_counter()
        compiled = step.lower(state).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(state))
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            jax.block_until_ready(compiled(state))
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        mem = jax.devices()[0].memory_stats() or {}
        temp = compiled.memory_analysis()
        temp_gib = round(temp.temp_size_in_bytes / 2**30, 2) if temp is not None else None
        results[f"jax-{backend}-remat-{remat}"] = med
        emit(timing=f"jax {backend} attention, remat {remat}", median_step_s=round(med, 4), compile_s=round(compile_s, 1),
             tflops=round(model_flops(n_params) / med / 1e12, 1), params=n_params, tokens=tokens,
             peak_gib=round(mem.get("peak_bytes_in_use", 0) / 2**30, 2), temp_gib=temp_gib,
             device=str(jax.devices()[0]))
        del state, compiled, step
        jax.clear_caches()

    if not with_torch:
        return
    cfg = config.to_diffusers_config()
    cfg.pop("_class_name")
    with torch.device(DEVICE):
        reference = WanTransformer3DModel(**cfg).to(torch.bfloat16).train()
    xt, tt, ct = (torch.from_numpy(a).to(DEVICE).to(torch.bfloat16) for a in (x, t, text))

    def torch_step():
        reference.zero_grad(set_to_none=True)
        loss = reference(xt, tt, ct, return_dict=False)[0].float().square().mean()
        loss.backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    torch_step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        torch_step()
        times.append(time.perf_counter() - start)
    med = statistics.median(times)
    emit(timing="torch eager sdpa", median_step_s=round(med, 4), tflops=round(model_flops(n_params) / med / 1e12, 1),
         peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE == "cuda" else None,
         device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu")
    for name, value in results.items():
        emit(ratio=f"{name} / torch", value=round(value / med, 3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="time a tiny config (a smoke test off-accelerator)")
    parser.add_argument("--runs", default="", help="JAX runs to time, e.g. cudnn:none,cudnn:full (backend:remat)")
    parser.add_argument("--jax-only", action="store_true", help="skip the numerics and the PyTorch timing")
    args = parser.parse_args(argv)
    global DEVICE, BACKENDS
    import jax
    import torch
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    BACKENDS = ("xla", "cudnn") if jax.default_backend() == "gpu" else ("xla",)
    emit(jax=jax.__version__, torch=torch.__version__, backend=jax.default_backend(), devices=str(jax.devices()))
    if not args.jax_only:
        numerics()
    if not args.skip_timing:
        runs = [tuple(item.split(":")) for item in args.runs.split(",") if item]
        timing(args.iters, args.small, runs, with_torch=not args.jax_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())

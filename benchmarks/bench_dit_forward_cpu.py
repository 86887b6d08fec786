"""The DiT forward as a library user calls it on the CPU: `fvjax.load_transformer(dir)(x, t, text)` against
Diffusers' `WanTransformer3DModel.from_pretrained(dir)(x, t, text)` on the same weights.

    python benchmarks/bench_dit_forward_cpu.py                     # default threads, process as a user has it
    python benchmarks/bench_dit_forward_cpu.py --retain-host-memory   # fvjax.cpu_tuning's malloc setting first

Wan2.1-1.3B widths (D 1536, 12 heads, ffn 8960, text 4096) with 2 layers, random weights written once as a
Diffusers checkpoint (fp32 safetensors) that both sides load; latents 16x5x32x32 = 1,280 tokens, 512 text
tokens, batch 1, fp32, no gradient. The calls alternate (fvjax, torch, fvjax, ...) after a warm-up so load
from other processes hits both; the script prints the median wall time of each, the ratio fvjax / Diffusers
(goal <= 1.0) and the machine's load average. Besides the library call it times the same function jitted
without per-jit compiler options (`plain jit`: what load_transformer did before it passed
`fvjax.cpu_tuning.compiler_options()`), so one run shows what the options are worth.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--latent", default="16,5,32,32", help="C,F,H,W of the latents (tokens = F*H*W/4)")
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument("--iters", type=int, default=9)
    p.add_argument("--retain-host-memory", action="store_true",
                   help="apply fvjax.cpu_tuning.retain_freed_host_memory() before JAX starts (what the CLIs do)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # this venv may hold libtpu (the tpu extra): no TPU probe
    retained = False
    if args.retain_host_memory:
        from fvjax.cpu_tuning import retain_freed_host_memory
        retained = retain_freed_host_memory()
    import jax
    import numpy as np
    import torch
    from diffusers import WanTransformer3DModel
    from flax import nnx

    import fvjax
    from fvjax.cpu_tuning import compiler_options
    from fvjax.families.wan.config import PRESETS
    from fvjax.families.wan.transformer import model_from_params

    config = PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    cfg = {k: v for k, v in config.to_diffusers_config().items() if not k.startswith("_")}
    cfg["num_layers"] = args.layers
    c, f, h, w = (int(v) for v in args.latent.split(","))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, c, f, h, w), dtype=np.float32)
    t = np.array([500.0], np.float32)
    text = rng.standard_normal((1, args.text_len, config.text_dim), dtype=np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        WanTransformer3DModel(**cfg).save_pretrained(tmp)
        reference = WanTransformer3DModel.from_pretrained(tmp).eval()
        model = fvjax.load_transformer(tmp)

    graphdef = nnx.graphdef(model.module)
    plain = jax.jit(lambda st, a, b, d: nnx.merge(graphdef, st)(a, b, d))
    tuned = jax.jit(lambda st, a, b, d: nnx.merge(graphdef, st)(a, b, d), compiler_options=compiler_options())
    xt, tt, ct = (torch.from_numpy(a) for a in (x, t, text))

    def library():
        return model(x, t, text).block_until_ready()

    def plain_jit():
        return plain(model.state, x, t, text).block_until_ready()

    def options_jit():
        return tuned(model.state, x, t, text).block_until_ready()

    unrolled_module = model_from_params(model.config, model.params, scan_unroll=True)
    unrolled_graphdef, unrolled_state = nnx.split(unrolled_module)
    unrolled = jax.jit(lambda st, a, b, d: nnx.merge(unrolled_graphdef, st)(a, b, d))

    def unrolled_call():
        return unrolled(unrolled_state, x, t, text).block_until_ready()

    def diffusers():
        with torch.no_grad():
            return reference(xt, tt, ct, return_dict=False)[0]

    calls = {"fvjax load_transformer call": library, "fvjax plain jit": plain_jit,
             "fvjax jit with cpu_tuning.compiler_options()": options_jit,
             "fvjax plain jit, layer scan unrolled": unrolled_call, "diffusers": diffusers}
    started = {}
    for name, fn in calls.items():
        began = time.perf_counter()
        out = fn()
        started[name] = time.perf_counter() - began
    err = float(np.max(np.abs(np.asarray(library()) - diffusers().numpy())))
    times = {name: [] for name in calls}
    load_before = os.getloadavg()[0]
    for _ in range(args.iters):
        for name, fn in calls.items():
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    med = {name: statistics.median(v) for name, v in times.items()}
    tokens = f * h * w // 4
    print(json.dumps(dict(tokens=tokens, text_len=args.text_len, layers=args.layers, iters=args.iters,
                          median_s={k: round(v, 4) for k, v in med.items()},
                          first_call_s={k: round(v, 1) for k, v in started.items()},
                          max_abs_diff=float(f"{err:.2e}"), torch_threads=torch.get_num_threads(),
                          cpus=len(os.sched_getaffinity(0)), retain_host_memory=retained,
                          load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)],
                          jax=jax.__version__, torch=torch.__version__)))
    print(f"forward ratio fvjax load_transformer call / diffusers = "
          f"{med['fvjax load_transformer call'] / med['diffusers']:.3f} (plain jit: "
          f"{med['fvjax plain jit'] / med['diffusers']:.3f})")
    del out
    return 0


if __name__ == "__main__":
    sys.exit(main())

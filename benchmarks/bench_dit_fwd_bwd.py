"""Forward+backward time of fvjax's Wan DiT against Diffusers' PyTorch WanTransformer3DModel.

Same small configuration, same weights, same inputs, fp32, on this machine's CPU. The step is
loss = mean(model(x, t, text)^2) and its gradient with respect to every parameter. JAX is timed after
compilation (compile time printed separately); PyTorch in eager mode; the two steps alternate so
that load from other processes affects both alike. Prints one JSON line per
framework and the ratio jax/torch (goal <= 1.0).

    python benchmarks/bench_dit_fwd_bwd.py [--threads 1] [--scan-unroll full] [--no-cpu-tuning] [--layers 4 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--ffn-dim", type=int, default=1024)
    p.add_argument("--text-dim", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=5, help="latent frames")
    p.add_argument("--height", type=int, default=16, help="latent height")
    p.add_argument("--width", type=int, default=24, help="latent width")
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--remat", default="none", help="fvjax remat policy (Diffusers runs without checkpointing)")
    p.add_argument("--scan-unroll", default="1",
                   help="fvjax layer-scan unroll: an int >= 1 (1 = rolled loop, the model default) or 'full'")
    p.add_argument("--no-cpu-tuning", action="store_true",
                   help="run JAX with its defaults, without fvjax.cpu_tuning (glibc keeps freed memory, YNNPACK "
                        "for matmuls only), which fvjax's train/generate CLIs apply")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch intra-op threads; 1 also pins the process to one core, so XLA is single-threaded "
                        "too (a fair comparison on a machine shared with other work)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    scan_unroll = True if args.scan_unroll == "full" else int(args.scan_unroll)
    if args.threads == 1:  # must be set before jax is imported
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        # XLA:CPU still runs YNNPACK dots on its own thread pool (process CPU time > wall time), so pin
        # the whole process to one core: both frameworks then get exactly one.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from fvjax.cpu_tuning import compiler_options, retain_freed_host_memory

    # Before JAX starts its CPU client, as fvjax's CLIs do; the allocator setting applies to the
    # whole process, so PyTorch runs with it too.
    host_memory_retained = False if args.no_cpu_tuning else retain_freed_host_memory()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import WanTransformer3DModel
    from flax import nnx

    from fvjax.families.wan.config import WanConfig
    from fvjax.families.wan.transformer import model_from_params

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from wan_torch_reference import fvjax_params  # test-side Diffusers -> fvjax weight copy

    torch.set_num_threads(args.threads)
    config = WanConfig(num_attention_heads=args.heads, attention_head_dim=args.head_dim, ffn_dim=args.ffn_dim,
                       num_layers=args.layers, text_dim=args.text_dim, freq_dim=256)
    cfg = config.to_diffusers_config()
    cfg.pop("_class_name")
    torch.manual_seed(0)
    reference = WanTransformer3DModel(**cfg).float().train()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 16, args.frames, args.height, args.width), dtype=np.float32)
    t = np.full((args.batch,), 500.0, np.float32)
    text = rng.standard_normal((args.batch, args.text_len, args.text_dim), dtype=np.float32)
    tokens = args.frames * (args.height // 2) * (args.width // 2)

    # PyTorch eager (train mode; dropout is 0 in Wan)
    xt, tt, ct = (torch.from_numpy(a) for a in (x, t, text))

    def torch_step():
        reference.zero_grad(set_to_none=True)
        loss = reference(xt, tt, ct, return_dict=False)[0].square().mean()
        loss.backward()
        return loss.item()

    # JAX
    graphdef, state = nnx.split(model_from_params(config, fvjax_params(reference, args.layers),
                                                  remat_policy=args.remat, attention_backend="xla",
                                                  scan_unroll=scan_unroll))
    xj, tj, cj = jnp.asarray(x), jnp.asarray(t), jnp.asarray(text)
    loss_fn = lambda st, x, t, c: jnp.mean(jnp.square(nnx.merge(graphdef, st)(x, t, c)))  # noqa: E731
    options = {} if args.no_cpu_tuning else compiler_options()
    step = jax.jit(jax.value_and_grad(loss_fn), compiler_options=options)
    start = time.perf_counter()
    compiled = step.lower(state, xj, tj, cj).compile()
    compile_s = time.perf_counter() - start

    def jax_step():
        loss, grads = jax.block_until_ready(compiled(state, xj, tj, cj))
        return float(loss)

    # Warm up both, then alternate the two steps so that load from other processes hits both alike.
    torch_step()
    jax_step()
    times = {"torch": [], "jax": []}
    cpu_times = {"torch": [], "jax": []}
    for _ in range(args.iters):
        for name, fn in (("torch", torch_step), ("jax", jax_step)):
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = fn()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)
            if name == "torch":
                torch_loss = loss
            else:
                jax_loss = loss

    common = dict(config=dict(layers=args.layers, heads=args.heads, head_dim=args.head_dim, ffn_dim=args.ffn_dim,
                              batch=args.batch, latent=[args.frames, args.height, args.width], tokens=tokens,
                              text_len=args.text_len), iters=args.iters)
    med = {name: statistics.median(v) for name, v in times.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu_times.items()}
    print(json.dumps(dict(framework="torch", median_step_s=round(med["torch"], 4),
                          median_step_cpu_s=round(med_cpu["torch"], 4), loss=torch_loss,
                          threads=torch.get_num_threads(), **common)))
    print(json.dumps(dict(framework="jax", median_step_s=round(med["jax"], 4),
                          median_step_cpu_s=round(med_cpu["jax"], 4), compile_s=round(compile_s, 2),
                          loss=jax_loss, remat=args.remat, scan_unroll=args.scan_unroll, devices=str(jax.devices()[0]),
                          xla_flags=os.environ.get("XLA_FLAGS", ""), compiler_options=options,
                          host_memory_retained=host_memory_retained, **common)))
    print(f"fwd+bwd wall-time ratio jax/torch = {med['jax'] / med['torch']:.3f}  (goal <= 1.0); "
          f"CPU-time ratio = {med_cpu['jax'] / med_cpu['torch']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

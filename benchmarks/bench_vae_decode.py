"""Wan VAE decode (and optionally encode) time: fvjax (JAX, jitted chunks) vs Diffusers' AutoencoderKLWan.

    python benchmarks/bench_vae_decode.py                       # CPU, a small Wan-layout VAE (base_dim 32)
    python benchmarks/bench_vae_decode.py --threads 1           # one core for both frameworks
    python benchmarks/bench_vae_decode.py --full --latent-frames 21 --height 480 --width 832 --encode
                                                                # the real Wan2.1 VAE, 81 frames (accelerator)

Same random weights on both sides (the Diffusers model's state dict through the fvjax key map), same
latents. JAX compile time is excluded from the timings and printed separately (first call minus a
steady call). The two frameworks alternate runs so that load from other processes hits both; medians
are reported, with the ratio jax / torch (goal <= 1.0) and the max abs difference of the outputs. On a
GPU the peak device memory of each framework is printed too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the real Wan2.1 VAE config (base_dim 96)")
    p.add_argument("--base-dim", type=int, default=32, help="base_dim of the small config (without --full)")
    p.add_argument("--latent-frames", type=int, default=3, help="latent frames T (video frames 1 + 4(T-1))")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="CPU: pin to this many cores (0: leave as is)")
    p.add_argument("--encode", action="store_true", help="also time encode of the decoded frame count")
    p.add_argument("--conv-impl", default="auto", choices=["auto", "taps", "conv3d"])
    p.add_argument("--skip-torch", action="store_true", help="time fvjax only")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import AutoencoderKLWan

    from fvjax.families.wan.vae import VAE_PRESETS, WanVAEConfig
    from fvjax.families.wan.vae.keymap import vae_params_from_diffusers
    from fvjax.families.wan.vae.model import vae_from_params

    if args.threads:
        torch.set_num_threads(args.threads)
    config = VAE_PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"] if args.full else WanVAEConfig(base_dim=args.base_dim)
    cuda = torch.cuda.is_available()
    tdev = torch.device("cuda" if cuda else "cpu")
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on {tdev}; "
          f"{os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}", flush=True)

    torch.manual_seed(0)
    model = AutoencoderKLWan(**{k: v for k, v in config.to_diffusers_config().items()
                                if not k.startswith("_")}).eval()
    params = vae_params_from_diffusers(config, {k: v.numpy() for k, v in model.state_dict().items()})
    vae = vae_from_params(config, jax.tree.map(lambda a: jnp.asarray(a, jdtype), params),
                          param_dtype=jdtype, dtype=jdtype, conv_impl=args.conv_impl)
    del params
    if cuda or tdtype != torch.float32:
        model = model.to(tdev, tdtype)

    h, w, t = args.height // 8, args.width // 8, args.latent_frames
    frames = 1 + 4 * (t - 1)
    z = np.random.default_rng(0).standard_normal((1, config.z_dim, t, h, w), dtype=np.float32)
    print(f"config base_dim={config.base_dim} ({'Wan2.1' if args.full else 'small'}), {args.dtype}; "
          f"decode latents {list(z.shape)} -> video [1, 3, {frames}, {args.height}, {args.width}]", flush=True)

    def jax_decode():
        out = vae.decode(z)
        out.block_until_ready()
        return out

    zt = torch.from_numpy(z).to(tdev, tdtype)

    def torch_decode():
        with torch.no_grad():
            out = model.decode(zt).sample
        if cuda:
            torch.cuda.synchronize()
        return out

    video = np.random.default_rng(1).uniform(-1, 1, (1, 3, frames, args.height, args.width)).astype(np.float32)
    vt = torch.from_numpy(video).to(tdev, tdtype)

    def jax_encode():
        mean, _ = vae.encode(video)
        mean.block_until_ready()
        return mean

    def torch_encode():
        with torch.no_grad():
            mean = model.encode(vt).latent_dist.mean
        if cuda:
            torch.cuda.synchronize()
        return mean

    jobs = [("decode", jax_decode, torch_decode)] + ([("encode", jax_encode, torch_encode)] if args.encode else [])
    for name, jfn, tfn in jobs:
        start = time.perf_counter()
        jout = jfn()
        first = time.perf_counter() - start
        jtimes, ttimes = [], []
        tout = None
        for _ in range(args.repeats):
            start = time.perf_counter()
            jout = jfn()
            jtimes.append(time.perf_counter() - start)
            if not args.skip_torch:
                start = time.perf_counter()
                tout = tfn()
                ttimes.append(time.perf_counter() - start)
        jmed = statistics.median(jtimes)
        print(f"[{name}] jax: {jmed:.3f} s median of {len(jtimes)} (first call {first:.1f} s, so compile "
              f"~{first - jmed:.1f} s)", flush=True)
        if cuda:
            stats = jax.devices()[0].memory_stats() or {}
            print(f"[{name}] jax peak device memory {stats.get('peak_bytes_in_use', 0) / 2**30:.2f} GiB "
                  f"(weights {sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx_state(vae))) / 2**30:.2f} "
                  "GiB)", flush=True)
        if tout is not None:
            tmed = statistics.median(ttimes)
            diff = np.abs(np.asarray(jout, np.float32) - tout.float().cpu().numpy()).max()
            print(f"[{name}] torch: {tmed:.3f} s median; ratio jax/torch = {jmed / tmed:.2f}; "
                  f"max abs diff {diff:.2e}", flush=True)
            if cuda:
                print(f"[{name}] torch peak device memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
                      flush=True)


def nnx_state(module):
    from flax import nnx

    return nnx.state(module, nnx.Param)


if __name__ == "__main__":
    main()

"""Where the memory of a Wan VAE decode goes, without running it: the two chunk programs of the eager
decode (first latent frame, later frames) lowered with abstract inputs and compiled for the CPU or a TPU
target, their `memory_analysis()` split into weights, causal caches, chunk input, output and temporaries.

    python benchmarks/vae_decode_memory.py                               # CPU, 81x480x832, fp32 and bf16
    python benchmarks/vae_decode_memory.py --target v5p-8 --conv-impl conv3d   # libtpu's compiler (tpu extra)

Nothing is allocated at full size (the VAE is built abstractly too). benchmarks/device_check.py prints the
same analysis for the GPU next to the measured peak.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB = 1024 ** 3


def _abstract(tree, sharding=None):
    import jax

    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def _gib(tree) -> float:
    import jax

    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)) / GIB


def chunk_memory(vae, z_shape, device=None) -> dict[str, dict]:
    """memory_analysis of the decoder's first-chunk and later-chunk programs (as the eager decode jits them:
    the incoming caches donated) for latents of `z_shape` [B, z_dim, T, h, w]; GiB per part. `vae` may be
    abstract (nnx.eval_shape). `device`: compile for this device (a TPU topology device), else the default."""
    import jax
    from flax import nnx

    from fvjax.families.wan.vae.model import _chunk_step, _jitted_chunk_step

    graphdef, state = nnx.split(vae.decoder)
    sharding = jax.sharding.SingleDeviceSharding(device) if device is not None else None
    b, c, _, h, w = z_shape
    chunk = jax.ShapeDtypeStruct((b, 1, h, w, c), vae.dtype, sharding=sharding)
    weights = _abstract(state, sharding)
    out, caches = jax.eval_shape(lambda s, x: _chunk_step(graphdef, s, x, None), weights, chunk)
    caches = _abstract(caches, sharding)
    result = {}
    for name, cache in (("first chunk", None), ("later chunk", caches)):
        began = time.perf_counter()
        compiled = _jitted_chunk_step.lower(graphdef, weights, chunk, cache).compile()
        memory = compiled.memory_analysis()
        result[name] = dict(
            arguments_gib=round(memory.argument_size_in_bytes / GIB, 3),
            outputs_gib=round(memory.output_size_in_bytes / GIB, 3),
            temp_gib=round(memory.temp_size_in_bytes / GIB, 3),
            aliased_gib=round(memory.alias_size_in_bytes / GIB, 3),
            weights_gib=round(_gib(weights), 3), caches_gib=round(_gib(caches), 3),
            chunk_output_gib=round(_gib(out), 3), compile_s=round(time.perf_counter() - began, 1))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="cpu", help="cpu, or a Cloud TPU type (v5p-8, v6e-8, ...)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--conv-impl", default="auto", choices=["auto", "taps", "conv3d"])
    parser.add_argument("--video", default="81,480,832", help="frames,height,width")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax.numpy as jnp

    from fvjax.families.wan.vae.config import VAE_PRESETS
    from fvjax.families.wan.vae.model import abstract_vae

    device = None
    if args.target != "cpu":
        from fvjax.training.aot import parse_target, topology_devices
        device = topology_devices(parse_target(args.target))[0]
    frames, height, width = (int(v) for v in args.video.split(","))
    config = VAE_PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    z_shape = (1, config.z_dim, (frames - 1) // 4 + 1, height // 8, width // 8)
    print(f"Wan2.1 VAE decode {list(z_shape)} -> {frames}x{height}x{width}, target {args.target}, "
          f"conv_impl {args.conv_impl}; GiB per program (total = arguments + outputs + temporaries - aliased)")
    print("dtype | program | weights | caches in | chunk out | arguments | outputs | temporaries | aliased | total | "
          "compile s")
    for name in args.dtypes.split(","):
        dtype = jnp.dtype(name)
        vae = abstract_vae(config, dtype, dtype=dtype, conv_impl=args.conv_impl)
        for program, m in chunk_memory(vae, z_shape, device).items():
            total = m["arguments_gib"] + m["outputs_gib"] + m["temp_gib"] - m["aliased_gib"]
            caches = m["caches_gib"] if program == "later chunk" else 0.0
            print(f"{name} | {program} | {m['weights_gib']:.3f} | {caches:.3f} | {m['chunk_output_gib']:.3f} | "
                  f"{m['arguments_gib']:.3f} | {m['outputs_gib']:.3f} | {m['temp_gib']:.3f} | {m['aliased_gib']:.3f} | "
                  f"{total:.3f} | {m['compile_s']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

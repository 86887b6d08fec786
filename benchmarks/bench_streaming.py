"""Streaming generation with a causal student on the CPU: first-chunk latency and frames per second.

    python benchmarks/bench_streaming.py [--num-frames 161] [--height 64 --width 64] [--blocks 3]
        [--local-attn-size 12 --sink-size 3] [--work DIR]

Writes the tiny random Wan pipeline (python -m fvjax.tiny_pipeline) and its transformer as a causal
student's fvjax weights dir (what a Self-Forcing run writes as <output_dir>/student_ema), then runs
`python -m fvjax.generate` on it, which prints the figures (compile and warm-up excluded).

    python benchmarks/bench_streaming.py --random Wan-AI/Wan2.1-T2V-1.3B-Diffusers --dtype bfloat16 \
        --height 480 --width 832 --num-frames 81 --local-attn-size -1 --sink-size 0

The same streaming loop on random weights of a full-size causal DiT and the full Wan VAE (no text encoder:
a random prompt embedding), for accelerators: the paper's 1.3B figure is 0.69 s first-chunk latency and
17 FPS at 480x832 on one H100 (spec self_forcing.md §6).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-frames", type=int, default=161)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=3, help="num_frames_per_block of the student")
    parser.add_argument("--local-attn-size", type=int, default=12)
    parser.add_argument("--sink-size", type=int, default=3)
    parser.add_argument("--work", default=None, help="directory for the pipeline, student and video (default: temp)")
    parser.add_argument("--random", default=None, metavar="PRESET",
                        help="random weights of this causal preset (and the Wan2.1 VAE) instead of the tiny pipeline")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    if args.random:
        return random_weights(args)

    import jax
    import numpy as np

    from fvjax.families.registry import get_family
    from fvjax.families.wan.causal import CausalWanConfig
    from fvjax.families.wan.tiny_pipeline import write_tiny_pipeline
    from fvjax.generate import main as generate
    from fvjax.weights.fvjax_dir import write_fvjax_dir
    from fvjax.weights.loading import load_params

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_streaming-"))
    pipeline = work / "pipeline"
    if not pipeline.exists():
        write_tiny_pipeline(pipeline)
    student = work / f"student_b{args.blocks}_w{args.local_attn_size}_s{args.sink_size}"
    if not student.exists():
        config, params = load_params(pipeline, "float32")
        config = CausalWanConfig.from_wan(config, num_frames_per_block=args.blocks,
                                          local_attn_size=args.local_attn_size, sink_size=args.sink_size)
        write_fvjax_dir(student, get_family("wan_causal"), config, jax.tree.map(np.asarray, params))
    return generate(["--model", str(student), "--base-pipeline", str(pipeline), "--prompt", "a red cat runs",
                     "--num-frames", str(args.num_frames), "--height", str(args.height), "--width", str(args.width),
                     "--out", str(work / "stream.mp4")])


def random_weights(args) -> int:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fvjax.families.wan.causal import CausalWanTransformer
    from fvjax.families.wan.causal.config import PRESETS
    from fvjax.families.wan.vae.config import VAE_PRESETS
    from fvjax.families.wan.vae.latents import denormalize_latents
    from fvjax.families.wan.vae.model import WanVAE
    from fvjax.inference.sampling import initial_noise, latent_shape
    from fvjax.inference.streaming import StreamingDecoder, StreamSpec, check_stream_length, stream_video, warm_up

    dtype = jnp.dtype(args.dtype)
    config = _with_window(PRESETS[args.random], args)
    model = CausalWanTransformer(config, rngs=nnx.Rngs(0), param_dtype=dtype, dtype=dtype)
    graphdef, state = nnx.split(model)
    vae = WanVAE(VAE_PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"], rngs=nnx.Rngs(1), param_dtype=dtype, dtype=dtype)
    decoder = StreamingDecoder(vae, denormalize_latents)
    shape = latent_shape(args.num_frames, args.height, args.width, config.in_channels)
    check_stream_length(config, shape[1])
    context = jax.random.normal(jax.random.key(2), (1, 512, config.text_dim), jnp.float32).astype(dtype)
    noise = initial_noise(0, 1, shape)
    spec = StreamSpec()
    compile_s = warm_up(graphdef, state, config, context, noise.shape, decoder, spec)
    frames, timing = stream_video(graphdef, state, config, context, noise, decoder, spec, key=jax.random.key(3))
    print(f"{args.random} ({args.dtype}, {jax.devices()[0].device_kind}): streamed {frames.shape[1]} frames "
          f"{args.height}x{args.width} ({shape[1]} latent frames, blocks of {config.num_frames_per_block}): first-chunk "
          f"latency {timing.first_chunk_latency:.3f} s, {timing.fps:.1f} frames/s (compile and warm-up {compile_s:.1f} s)")
    return 0


def _with_window(config, args):
    """The preset with the command line's blocks and window."""
    import dataclasses

    config = dataclasses.replace(config, num_frames_per_block=args.blocks, local_attn_size=args.local_attn_size,
                                 sink_size=args.sink_size)
    config.check("command line")
    return config


if __name__ == "__main__":
    sys.exit(main())

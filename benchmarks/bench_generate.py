"""End-to-end text-to-video time: fvjax (prompt -> UMT5 -> jitted sampling loop -> VAE decode) against
diffusers' WanPipeline on the same tiny pipeline, on this machine's CPU.

    python benchmarks/bench_generate.py [--steps 20 --num-frames 17 --height 128 --width 128 --iters 3]
    python benchmarks/bench_generate.py --threads 1      # both frameworks pinned to one core

The pipeline is `python -m fvjax.tiny_pipeline` (random weights; the tiny DiT, the 8-channel Wan VAE, a
tiny UMT5), loaded by both sides from the same directory. Both run UniPC with CFG (two DiT calls a step)
and decode with the VAE to frames; fvjax's figure excludes compilation (printed separately: a first call
compiles, later calls reuse it). The two sides alternate so load from other processes hits both.
Prints the median seconds per video and the ratio fvjax / diffusers.
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="1: pin the whole process to one core (both frameworks single-threaded); "
                             "0: default threading")
    args = parser.parse_args(argv)
    if args.threads == 1:   # before jax / torch start their thread pools
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    import numpy as np
    import torch
    from diffusers import WanPipeline

    if args.threads == 1:
        torch.set_num_threads(1)

    from fvjax.inference.sampling import SamplerSpec
    from fvjax.families.wan.text.prompt import WAN_DEFAULT_NEGATIVE_PROMPT
    from fvjax.inference.text_to_video import Components, VideoRequest, generate_videos
    from fvjax.families.wan.tiny_pipeline import write_tiny_pipeline
    from fvjax.weights.loading import load_transformer

    prompt = "a red cat runs on the water"
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_pipeline(os.path.join(tmp, "pipeline"))
        reference = WanPipeline.from_pretrained(str(path), torch_dtype=torch.float32)
        reference.set_progress_bar_config(disable=True)
        transformer = load_transformer(path)
        components = Components.load(str(path), transformer.family)
    spec = SamplerSpec(kind="unipc", num_steps=args.steps, guidance_scale=5.0, shift=3.0)
    request = VideoRequest(args.num_frames, args.height, args.width, seed=0)

    def ours():
        return generate_videos(transformer.apply, transformer.state, transformer.config.in_channels, components,
                               [prompt], spec, request, negative_prompt=WAN_DEFAULT_NEGATIVE_PROMPT)

    def theirs():
        with torch.no_grad():
            return reference(prompt=prompt, negative_prompt=WAN_DEFAULT_NEGATIVE_PROMPT, num_frames=args.num_frames,
                             height=args.height, width=args.width, num_inference_steps=args.steps,
                             guidance_scale=5.0, output_type="np").frames

    start = time.perf_counter()
    first = ours()
    first_call_s = time.perf_counter() - start
    theirs()
    times = {"fvjax": [], "diffusers": []}
    for _ in range(args.iters):
        for name, fn in (("fvjax", ours), ("diffusers", theirs)):
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            assert np.asarray(out).shape[-4:] == (args.num_frames, args.height, args.width, 3), np.asarray(out).shape
    med = {name: statistics.median(v) for name, v in times.items()}
    print(json.dumps(dict(steps=args.steps, frames=args.num_frames, size=[args.height, args.width],
                          fvjax_median_s=round(med["fvjax"], 3), fvjax_first_call_s=round(first_call_s, 1),
                          diffusers_median_s=round(med["diffusers"], 3), torch_threads=torch.get_num_threads(),
                          frames_shape=list(first.shape))))
    print(f"generate time ratio fvjax / diffusers = {med['fvjax'] / med['diffusers']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Streaming generation with a causal student on the CPU: first-chunk latency and frames per second.

    python benchmarks/bench_streaming.py [--num-frames 161] [--height 64 --width 64] [--blocks 3]
        [--local-attn-size 12 --sink-size 3] [--work DIR]

Writes the tiny random Wan pipeline (python -m fvjax.tiny_pipeline) and its transformer as a causal
student's fvjax weights dir (what a Self-Forcing run writes as <output_dir>/student_ema), then runs
`python -m fvjax.generate` on it, which prints the figures (compile and warm-up excluded).
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    sys.exit(main())

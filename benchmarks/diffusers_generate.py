"""The Diffusers twin of `python -m fvjax.generate` for benchmarks/bench_time_to_first.py: what a Diffusers
user runs to make the same video (WanPipeline.from_pretrained, the call, an H.264 MP4), as its own process.

    python benchmarks/diffusers_generate.py --model DIR --prompt TEXT --out video.mp4
        [--negative-prompt TEXT] [--num-frames 17 --height 128 --width 128 --steps 20 --guidance-scale 5.0 --seed 0 --fps 16]

The MP4 is written with PyAV at the settings of fvjax.io.video.write_mp4 (H.264, yuv420p, crf 18), so both
sides pay the same encoder; fvjax is not imported.
"""
from __future__ import annotations

import argparse
import sys
from fractions import Fraction


def write_mp4(frames, path: str, fps: float) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=16.0)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        video = pipe(prompt=args.prompt, negative_prompt=args.negative_prompt, num_frames=args.num_frames,
                     height=args.height, width=args.width, num_inference_steps=args.steps, guidance_scale=args.guidance_scale, output_type="np",
                     generator=torch.Generator().manual_seed(args.seed)).frames[0]
    write_mp4(np.round(np.clip(video, 0, 1) * 255).astype(np.uint8), args.out, args.fps)
    print(f"wrote {args.out} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]}, {args.fps:g} fps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

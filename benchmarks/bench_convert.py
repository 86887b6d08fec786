"""Conversion time and peak RSS for a synthetic ~1 GB Diffusers Wan checkpoint (both directions).

    python benchmarks/bench_convert.py [--layers 5] [--dtype float32] [--workdir /tmp/fvjax_bench_convert]

The checkpoint is written directly as safetensors (sharded, with index.json, like the published repos)
from random numpy data for a mid-size WanConfig (1.3B widths, fewer layers); no torch model is built.
Each conversion runs as its own `python -m fvjax.convert` process; its peak RSS comes from the kernel
(wait4 rusage), so it includes the interpreter, jax and orbax. Goal: peak RSS <= 1.3x the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fvjax.families.wan.config import WanConfig
from fvjax.families.wan.keymap import tensor_keys
from fvjax.weights.diffusers_writer import plan_shards
from fvjax.weights.paths import WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from fvjax.weights.safetensors_io import TensorSpec, write_safetensors

GB = 1e9


def write_synthetic_checkpoint(directory: Path, config: WanConfig, max_shard_bytes: int) -> int:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    keys = tensor_keys(config)
    specs = [TensorSpec(k.diffusers_key, np.dtype(np.float32), k.torch_shape) for k in keys]

    def produce(name: str) -> np.ndarray:  # one tensor at a time: the writer never holds the checkpoint
        shape = next(s.shape for s in specs if s.name == name)
        return rng.standard_normal(shape, dtype=np.float32) * 0.02

    shards = plan_shards(specs, max_shard_bytes)
    names = [WEIGHTS_NAME.replace(".safetensors", f"-{i + 1:05d}-of-{len(shards):05d}.safetensors")
             for i in range(len(shards))]
    for name, shard in zip(names, shards):
        write_safetensors(directory / name, shard, produce, metadata={"format": "pt"})
    total = sum(s.nbytes for s in specs)
    index = {"metadata": {"total_size": total}, "weight_map": {s.name: n for n, sh in zip(names, shards) for s in sh}}
    (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True))
    (directory / "config.json").write_text(json.dumps(config.to_diffusers_config(), indent=2, sort_keys=True))
    return total


def run_measured(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a child process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=5, help="5 layers of the 1.3B widths ~ 1.03 GB in fp32")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="--dtype of the diffusers-to-fvjax conversion")
    parser.add_argument("--workdir", default="/tmp/fvjax_bench_convert")
    args = parser.parse_args()

    config = WanConfig(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=args.layers)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    src, fv, back = work / "diffusers", work / "fvjax", work / "diffusers_back"
    t0 = time.perf_counter()
    size = write_synthetic_checkpoint(src, config, max_shard_bytes=500_000_000)
    print(f"synthetic checkpoint: {size / GB:.3f} GB fp32, {len(list(src.glob('*.safetensors')))} shards, "
          f"D={config.inner_dim} ffn={config.ffn_dim} layers={config.num_layers} "
          f"(written in {time.perf_counter() - t0:.1f} s)")

    base_wall, base_rss = run_measured([sys.executable, "-c", "import jax, orbax.checkpoint, fvjax.weights; "
                                        "jax.numpy.zeros(1).block_until_ready()"])
    print(f"baseline (python + jax + orbax imported, nothing converted): peak RSS {base_rss / GB:.3f} GB")

    py = [sys.executable, "-m", "fvjax.convert"]
    out_size = size // (2 if args.dtype == "bfloat16" else 1)
    results = {}
    for name, argv, produced in (
            (f"diffusers-to-fvjax ({args.dtype})", ["diffusers-to-fvjax", "--src", str(src), "--dst", str(fv),
                                                    "--dtype", args.dtype, "--no-progress"], out_size),
            ("fvjax-to-diffusers", ["fvjax-to-diffusers", "--src", str(fv), "--dst", str(back), "--no-progress"],
             out_size)):
        wall, rss = run_measured(py + argv)
        results[name] = rss / size
        print(f"{name}: {wall:.1f} s ({size / GB / wall:.2f} GB/s of checkpoint), peak RSS {rss / GB:.3f} GB = "
              f"{rss / size:.2f}x the {size / GB:.2f} GB checkpoint; above the runtime baseline "
              f"{(rss - base_rss) / GB:.3f} GB = {(rss - base_rss) / produced:.2f}x the output")
    for name, ratio in results.items():
        print(f"goal peak RSS <= 1.3x checkpoint, {name}: {ratio:.2f}x -> {'met' if ratio <= 1.3 else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Convert Wan transformer weights between Diffusers safetensors and fvjax (orbax) checkpoints.

    python -m fvjax.convert diffusers-to-fvjax --src PATH --dst DIR [--dtype float32|bfloat16]
    python -m fvjax.convert fvjax-to-diffusers --src DIR --dst DIR [--dtype ...] [--max-shard-size 10GB]

--src for diffusers-to-fvjax: a Diffusers pipeline dir, a transformer dir, or a hub id in the local HF
cache. Both directions work tensor by tensor (peak memory near one copy of the output), show a progress
bar, and are atomic (a failed conversion leaves no --dst). Bad input: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import sys

from fvjax.errors import ArgumentParser, cli_entry

DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m fvjax.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d2f = sub.add_parser("diffusers-to-fvjax", help="Diffusers safetensors -> fvjax orbax params + config")
    d2f.add_argument("--src", required=True, help="Diffusers pipeline/transformer dir or cached HF hub id")
    d2f.add_argument("--dst", required=True, help="new output directory (must not exist)")
    d2f.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                     help="parameter dtype to store (default: the checkpoint's own)")
    f2d = sub.add_parser("fvjax-to-diffusers", help="fvjax weights dir -> Diffusers safetensors + config.json")
    f2d.add_argument("--src", required=True, help="fvjax weights dir (from diffusers-to-fvjax or training)")
    f2d.add_argument("--dst", required=True, help="new output directory (must not exist)")
    f2d.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                     help="dtype of the written tensors (default: the stored one)")
    f2d.add_argument("--max-shard-size", default="10GB",
                     help="shard the safetensors above this size, with an index.json (default 10GB, as Diffusers)")
    for p in (d2f, f2d):
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports only after the arguments parsed, so --help is instant.
    from fvjax.weights.conversion import diffusers_to_fvjax, fvjax_to_diffusers
    from fvjax.weights.dtypes import as_dtype

    dtype = as_dtype(args.dtype, where="--dtype")
    if args.command == "diffusers-to-fvjax":
        out = diffusers_to_fvjax(args.src, args.dst, dtype, progress=not args.no_progress)
        print(f"wrote fvjax weights to {out}")
    else:
        files = fvjax_to_diffusers(args.src, args.dst, dtype, max_shard_size=args.max_shard_size,
                                   progress=not args.no_progress)
        print(f"wrote Diffusers weights to {args.dst} ({len(files)} safetensors file(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())

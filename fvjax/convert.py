"""Convert Wan transformer weights between Diffusers safetensors and fvjax (orbax) checkpoints.

    python -m fvjax.convert diffusers-to-fvjax --src PATH --dst DIR [--dtype float32|bfloat16]
    python -m fvjax.convert fvjax-to-diffusers --src DIR --dst DIR [--dtype ...] [--max-shard-size 10GB]
    python -m fvjax.convert lora-from-checkpoint --checkpoint OUT/checkpoints/STEP --role student [--ema] --dst DIR
    python -m fvjax.convert merge-lora --src WEIGHTS --lora FILE --dst DIR [--to fvjax|diffusers] [--lora-scale S]

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
    c2l = sub.add_parser("lora-from-checkpoint", help="a LoRA role of a training checkpoint -> Diffusers LoRA "
                         "pytorch_lora_weights.safetensors")
    c2l.add_argument("--checkpoint", required=True, help="a checkpoint step dir (OUT/checkpoints/STEP), or an "
                     "output_dir / checkpoints dir (its newest)")
    c2l.add_argument("--role", default="student", help="the LoRA role (default student)")
    c2l.add_argument("--ema", action="store_true", help="export the role's EMA factors")
    c2l.add_argument("--dst", required=True, help="a directory (the file is named pytorch_lora_weights.safetensors) "
                     "or a .safetensors path")
    merge = sub.add_parser("merge-lora", help="full weights + a Diffusers LoRA file -> merged full weights")
    merge.add_argument("--src", required=True, help="Diffusers pipeline/transformer dir, cached hub id or fvjax dir")
    merge.add_argument("--lora", required=True, help="Diffusers/PEFT LoRA .safetensors (or a dir holding "
                       "pytorch_lora_weights.safetensors)")
    merge.add_argument("--dst", required=True, help="new output directory (must not exist)")
    merge.add_argument("--to", choices=("fvjax", "diffusers"), default="fvjax", help="format written (default fvjax)")
    merge.add_argument("--lora-scale", type=float, default=1.0, help="multiplies the LoRA delta (default 1)")
    merge.add_argument("--dtype", choices=DTYPE_CHOICES, default=None, help="parameter dtype (default: the stored)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports only after the arguments parsed, so --help is instant.
    from fvjax.weights.conversion import diffusers_to_fvjax, fvjax_to_diffusers
    from fvjax.weights.dtypes import as_dtype

    if args.command == "lora-from-checkpoint":
        from fvjax.lora.convert import checkpoint_lora

        print(f"wrote Diffusers LoRA {checkpoint_lora(args.checkpoint, args.role, args.dst, ema=args.ema)}")
        return 0
    dtype = as_dtype(args.dtype, where="--dtype")
    if args.command == "merge-lora":
        from fvjax.lora.convert import merge_lora_into_weights

        out = merge_lora_into_weights(args.src, args.lora, args.dst, args.to, strength=args.lora_scale, dtype=dtype)
        print(f"wrote {args.to} weights with the LoRA merged to {out}")
        return 0
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

"""Write a tiny text-to-video pipeline with random weights, in Diffusers' on-disk layout.

    python -m fvjax.tiny_pipeline --out outputs/tiny_pipeline [--seed 0] [--family wan]

For demos and smoke tests where the real pipeline cannot be downloaded: the family's tiny presets of its
transformer, VAE and text encoder (Wan: a 2-layer DiT, an 8-channel VAE, a 32-dim UMT5, a small T5
tokenizer, UniPC scheduler, model_index.json). Written with fvjax's own writers (no torch); Diffusers'
pipeline class loads it. The videos it makes are noise: the weights are random.
"""
from __future__ import annotations

import sys

from fvjax.errors import ArgumentParser, cli_entry

PROG = "python -m fvjax.tiny_pipeline"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", required=True, help="new directory for the pipeline (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--family", default="wan", help="the model family (default wan)")
    args = parser.parse_args(argv)
    from fvjax.families.registry import get_family

    family = get_family(args.family, "command line", "--family")
    out = family.write_demo_pipeline(args.out, args.seed)
    print(f"wrote a tiny random {family.display_name} pipeline to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

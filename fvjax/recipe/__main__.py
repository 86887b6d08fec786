"""CLI: python -m fvjax.recipe upgrade OLD [--out NEW.yaml]

`upgrade` writes OLD (a recipe in any form fvjax loads, or a FastVideo legacy launch script) in FastVideo's
current recipe schema (fvjax/recipe/upgrade.py), to stdout or to NEW.yaml. Errors are one line on stderr
(`fvjax: error: <file>: <key>: <message>`), exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fvjax.errors import ArgumentParser, cli_entry, fail

PROG = "python -m fvjax.recipe"

UPGRADE_HELP = """\
Write OLD in FastVideo's current recipe schema: models.<role>: {_target_, init_from, trainable, ...},
method: {_target_, ...}, training.{distributed, data, optimizer, loop, checkpoint, tracker, vsa, model},
callbacks.{grad_clip, ema, validation}, pipeline:.

OLD is a recipe fvjax loads (the seed's Phase 2 distill:, Phase 3 recipe:, FastVideo's design-branch
roles:, or already the current schema) or a FastVideo legacy launch script (.sh/.slurm running
`torchrun fastvideo/training/wan_{distillation,training}_pipeline.py --flag value ...`, read as the
recipe it runs, with the legacy argparse defaults made explicit).

The new file trains what the old one did: it is loaded back and compared with OLD's resolved recipe
before it is printed. Values the current schema has no key for are written as the fvjax keys fvjax
accepts there; values fvjax never reads are left out; the file's header names both. Self-forcing
scripts are refused (not implemented in fvjax yet)."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, allow_abbrev=False, description="Tools for fvjax recipes.",
                            epilog=f"Run `{PROG} upgrade --help` for the upgrade's details.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    commands.required = True
    upgrade = commands.add_parser(
        "upgrade", help="write a recipe or legacy launch script in FastVideo's current schema",
        description=UPGRADE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    upgrade.hint = f"see {PROG} upgrade --help"
    upgrade.add_argument("old", metavar="OLD", help="the recipe (.yaml/.yml) or launch script (.sh/.slurm)")
    upgrade.add_argument("--out", metavar="NEW.yaml",
                         help="write the upgraded recipe here (default: print it to stdout)")
    return parser


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fvjax.recipe.upgrade import upgrade_path
    from fvjax.recipe.yamlio import YAML_SUFFIXES

    out = None
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() not in YAML_SUFFIXES:
            fail("command line", "--out", f"{args.out!r}: the upgraded recipe is YAML; give a .yaml or .yml path")
        if out.exists() and Path(args.old).exists() and out.resolve() == Path(args.old).resolve():
            fail("command line", "--out", "is OLD itself; write the upgrade to a new file")
        if out.is_dir():
            fail("command line", "--out", f"{args.out!r} is a directory")
    result = upgrade_path(args.old)
    if out is None:
        sys.stdout.write(result.text)
        return 0
    try:
        out.write_text(result.text, encoding="utf-8")
    except OSError as e:
        fail("command line", "--out", f"cannot write {args.out!r}: {e.strerror}")
    print(f"fvjax: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

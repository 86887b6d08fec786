"""CLI: python -m fvjax.train --config PATH [--resume-from-checkpoint PATH|latest]
                               [--override-output-dir DIR] [--dry-run [--topology NAME]] [--dotted.key VALUE ...]

The recipe is the experiment; the flags are only runtime overrides. Any other `--dotted.key VALUE` (or
`--dotted.key=VALUE`) replaces that key of the recipe before it is checked, in whichever schema the recipe
is written (FastVideo's `--training.loop.max_train_steps 10`; `--training.max_train_steps 10` in the older
flat schema); an unknown key is an error. `--dry-run` loads and checks the
recipe, resolves each role's architecture, plans the mesh for the recipe's declared topology (no devices
needed), prints the plan with parameter counts and per-device memory, lists missing inputs as warnings,
and exits 0; with `--topology NAME` (a TPU slice such as v5p-8) it also compiles the real training step
for that slice with libtpu on this host and prints the compiled memory per device (fvjax/training/aot.py).
A real run refuses to start on missing inputs, then hands over to `fvjax.training.loop.run_training`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fvjax.errors import ArgumentParser, cli_entry, fail
from fvjax.methods.registry import available_methods

PROG = "python -m fvjax.train"


USAGE = (f"usage: {PROG} --config PATH [--dry-run [--topology NAME]] [--resume-from-checkpoint PATH|latest] "
         "[--override-output-dir DIR] [--dotted.key VALUE ...]")
EPILOG = ("Recipe overrides: any --dotted.key VALUE (or --dotted.key=VALUE) sets that recipe key before the "
          "recipe is checked, e.g. --training.loop.max_train_steps 10 (FastVideo's current schema) or "
          "--training.max_train_steps 10 (the flat schema). VALUE is typed as FastVideo types it: true/false, "
          "null, numbers, [a, b] lists, else a string.")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, hint=USAGE, allow_abbrev=False, epilog=EPILOG,
                            description="Train from one YAML recipe; its method is one of: "
                                        f"{', '.join(available_methods())}.")
    parser.add_argument("--config", required=True, metavar="PATH", help="the recipe YAML file")
    parser.add_argument("--resume-from-checkpoint", metavar="PATH|latest",
                        help="a checkpoint directory, an output directory, or 'latest' (in output_dir)")
    parser.add_argument("--override-output-dir", metavar="DIR", help="replace training.output_dir")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the recipe and print the plan, without training")
    parser.add_argument("--topology", metavar="NAME",
                        help="with --dry-run: also compile the training step for this TPU slice (a Cloud TPU "
                             "accelerator type: v5p-8, v6e-8, v5litepod-16, v4-8, ...) with libtpu on this host "
                             "and print its memory per device against the chip's HBM (needs pip install -e \".[tpu]\")")
    return parser


def _devices_present() -> tuple[int, str]:
    import jax
    devices = jax.devices()
    kinds = sorted({d.platform for d in devices})
    return len(devices), f"{len(devices)} {'/'.join(kinds)} device(s)"


def _load(args: argparse.Namespace, device_count):
    from fvjax.recipe import load_recipe
    from fvjax.recipe.overrides import parse_overrides

    for flag, value in (("--override-output-dir", args.override_output_dir),
                        ("--resume-from-checkpoint", args.resume_from_checkpoint)):
        if value is not None and not value.strip():
            fail("command line", flag, "must not be empty")
    recipe = load_recipe(args.config, device_count=device_count,
                         overrides=parse_overrides(args.overrides, TOP_LEVEL_KEYS))
    return recipe.with_overrides(output_dir=args.override_output_dir,
                                 resume_from_checkpoint=args.resume_from_checkpoint)


# Top-level keys of every schema (an undotted override must name one).
TOP_LEVEL_KEYS = ("recipe", "distill", "models", "roles", "training", "pipeline_config", "pipeline_config_path",
                  "method_config", "method", "callbacks", "pipeline")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args, rest = build_parser().parse_known_args(argv)
    args.overrides = rest
    return args


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.topology is not None and not args.dry_run:
        fail("command line", "--topology", "only with --dry-run (it compiles for devices that are not here)")
    if args.dry_run:
        from fvjax.recipe.plan import build_plan, render

        target = None
        if args.topology is not None:
            import os

            import jax

            from fvjax.training.aot import parse_target
            target = parse_target(args.topology)
            if not os.environ.get("JAX_PLATFORMS"):
                jax.config.update("jax_platforms", "cpu")   # the host computes nothing; libtpu only compiles
        recipe = _load(args, lambda: _devices_present()[0])
        print(render(build_plan(recipe), _devices_present()[1]), flush=True)
        if target is not None:
            from fvjax.training.aot import compile_step, render as render_compiled

            print(render_compiled(recipe, compile_step(recipe, target)))
        return 0

    from fvjax.cpu_tuning import retain_freed_host_memory
    from fvjax.training.distributed import maybe_initialize
    retain_freed_host_memory()   # before JAX starts its CPU client (see fvjax/cpu_tuning.py)
    maybe_initialize()
    recipe = _load(args, lambda: _devices_present()[0])
    from fvjax.recipe.preflight import find_problems
    from fvjax.weights.hub import download_missing

    download_missing(recipe)   # hub ids not in the local cache (unless HF_HUB_OFFLINE=1)

    problems = find_problems(recipe)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more; run with --dry-run to list them)" if len(problems) > 1 else ""
        fail(recipe.source, first.key, f"{first.message}; training cannot start{more}")
    from fvjax.sharding.mesh import make_mesh, select_devices
    from fvjax.training.loop import run_training

    # The one mesh of the run; building it checks that the plan's devices are here.
    mesh = make_mesh(recipe.mesh, select_devices(recipe.mesh), where=recipe.source)
    run_training(recipe, mesh)
    return 0


if __name__ == "__main__":
    sys.exit(main())

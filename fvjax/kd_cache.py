"""CLI: python -m fvjax.kd_cache --config RECIPE [--dotted.key VALUE ...]

Makes the teacher-trajectory cache of a KD recipe (method kd; FastVideo's KDMethod / KDCausalMethod) before
training: every sample of training.data_path gets the teacher's ODE trajectory (the states at t_list[:-1] and
the clean endpoint) in method_config.teacher_path_cache (fvjax/methods/kd/cache.py). Resumable: a rerun makes
only the missing samples (the result is byte-identical to an uninterrupted run); a cache made with other
settings is refused in one line. Training completes an incomplete cache itself when the recipe has a teacher;
once the cache is complete the teacher may be removed from the recipe.
"""
from __future__ import annotations

import sys
from typing import Sequence

from fvjax.errors import ArgumentParser, cli_entry, fail

PROG = "python -m fvjax.kd_cache"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Make (or complete) a KD recipe's teacher-trajectory cache.",
                            hint=f"usage: {PROG} --config PATH [--dotted.key VALUE ...]")
    parser.add_argument("--config", required=True, metavar="PATH", help="the KD recipe YAML file")
    return parser


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    from fvjax.cli_setup import enable_compilation_cache
    from fvjax.training.distributed import maybe_initialize

    maybe_initialize()
    enable_compilation_cache()
    import jax

    from fvjax.recipe import load_recipe
    from fvjax.recipe.overrides import parse_overrides
    from fvjax.train import TOP_LEVEL_KEYS

    recipe = load_recipe(args.config, device_count=lambda: len(jax.devices()),
                         overrides=parse_overrides(rest, TOP_LEVEL_KEYS))
    if recipe.method != "kd":
        fail(recipe.source, "method", f"is {recipe.method!r}; {PROG} makes the trajectory cache of a KD recipe")
    if "teacher" not in recipe.roles:
        fail(recipe.source, "models.teacher", "missing; the teacher makes the trajectories")

    from fvjax.methods.api import DataContext
    from fvjax.methods.kd import cache
    from fvjax.methods.kd.generate import complete_cache
    from fvjax.sharding.logical import use_rules
    from fvjax.sharding.mesh import make_mesh, select_devices
    from fvjax.sharding.rules import rules_for
    from fvjax.training.loop import data_config
    from fvjax.training.roles import build_runtime

    mesh = make_mesh(recipe.mesh, select_devices(recipe.mesh), where=recipe.source)
    _, rules = rules_for(recipe.mesh)
    with use_rules(mesh, rules):
        runtime = build_runtime(recipe, mesh, rules)
        root = complete_cache(recipe.method_config, DataContext(recipe, runtime, data_config(recipe, runtime)))
    if jax.process_index() == 0:
        total = cache.read_metadata(root)["num_samples"]
        print(f"fvjax: KD trajectory cache {root} is complete ({total} samples)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

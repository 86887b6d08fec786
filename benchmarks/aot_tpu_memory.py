"""Compiled per-device memory of full-size recipes on TPU slices, without a TPU: each recipe's real training
step compiled by libtpu on this host (fvjax/training/aot.py, what `--dry-run --topology` does), one row per
(recipe, slice). A row that does not fit is compiled again with sequence parallelism over the whole slice
(sp_size = devices: activations split by tokens) to show whether that makes it fit.

    pip install -e ".[tpu]"
    python benchmarks/aot_tpu_memory.py [--recipes seed-dmd2,finetune-1.3b,finetune-14b]
        [--topologies v5p-8,v6e-8,v5litepod-16,v5litepod-32,v4-8]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

RECIPES = {
    "seed-dmd2": ("configs/distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml", {}),
    "finetune-1.3b": ("configs/finetune/wan2.1_t2v_1.3B.yaml", {}),
    "finetune-14b": ("configs/finetune/wan2.1_t2v_1.3B.yaml",
                     {"models": {"student": {"family": "wan", "path": "Wan-AI/Wan2.1-T2V-14B-Diffusers"}}}),
}


def load(name: str, sp: int | None = None):
    from fvjax.recipe import parse_recipe

    path, changes = RECIPES[name]
    raw = yaml.safe_load((REPO / path).read_text())
    for section, values in changes.items():
        raw[section].update(values)
    if sp is not None:
        raw["training"].update(num_gpus=sp, sp_size=sp)
    return parse_recipe(yaml.safe_dump(raw, sort_keys=False), REPO / path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--topologies", default="v5p-8,v6e-8,v5litepod-16,v5litepod-32,v4-8")
    args = parser.parse_args()
    from fvjax.training.aot import compile_step, parse_target

    print("recipe | slice | devices | mesh | args | outputs | temps | aliased | total / HBM per device (GiB) | "
          "fits | compile s | TFLOP/step", flush=True)
    for name in args.recipes.split(","):
        for topology in args.topologies.split(","):
            target = parse_target(topology)
            for attempt in ("as written", "sp over the slice"):
                sp = None
                if attempt != "as written":
                    from fvjax.training.aot import topology_devices
                    sp = len(topology_devices(target))
                began = time.perf_counter()
                try:
                    step = compile_step(load(name, sp), target)
                except Exception as err:  # noqa: BLE001 - a row per configuration, whatever happens
                    print(f"{name} ({attempt}) | {topology} | failed: {type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]} ({time.perf_counter() - began:.0f} s)", flush=True)
                    break
                g = 1024 ** 3
                flops = f"{step.step_flops / 1e12:.0f}" if step.step_flops else "-"
                stopped = " (compiler: temporaries exceed HBM)" if step.out_of_memory else ""
                print(f"{name} ({attempt}) | {topology} | {step.devices} | {step.mesh} | {step.argument_bytes / g:.2f} | "
                      f"{step.output_bytes / g:.2f} | {step.temp_bytes / g:.2f} | {step.alias_bytes / g:.2f} | "
                      f"{step.total_bytes / g:.2f} / {step.hbm_bytes / g:.2f} | {'yes' if step.fits else 'no' + stopped} | "
                      f"{step.compile_seconds:.0f} | {flops}", flush=True)
                if step.fits:
                    break


if __name__ == "__main__":
    main()

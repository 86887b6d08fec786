"""Issue 18's GPU checks in one run: full-size 1.3B training steps (finetune, DMD2) with MFU and peak memory,
3-step generation against Diffusers' WanPipeline, the VAE decode's memory against Diffusers', the DiT's
activation memory without remat against PyTorch's. One line per figure, fvjax and PyTorch side by side.

    python benchmarks/device_check.py                  # the default units on one H200: goal < 8 min (not timed yet)
    python benchmarks/device_check.py --only vae       # units whose name starts with "vae" (rerun one check)
    python benchmarks/device_check.py --list           # the units
    python benchmarks/device_check.py --smoke          # tiny shapes on the CPU (tests/test_device_check.py)

Through the device tool: the GPU image has JAX (CUDA), flax, optax, orbax, chex and torch; nothing is
downloaded (weights are random at full size). Do not `pip install -e ".[test]"` there: the test extra pins a
CPU torch and jax[tpu]. What else the checks import travels as wheels in the git-ignored .whl/ (pass
carry=[".whl"]; 64 MiB at most): diffusers and what the image lacks of its and fvjax's dependencies
(huggingface_hub, safetensors, regex, pyyaml, grain, pyarrow, av, transformers, tensorboardX, ...; see which
with `pip install --dry-run`). Made here with, for example,

    pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl diffusers

and run there as

    pip install -q --no-deps -e . && pip install -q --no-index --find-links .whl diffusers <the others>
    python benchmarks/device_check.py

(not yet tried on the GPU image: no accelerator was lent to the task that wrote this script).

Each unit runs in its own Python process with a time limit, so a crash, an out-of-memory or a hang prints one
FAILED line and the run goes on, and each process's peak memory is its own (JAX with
XLA_PYTHON_CLIENT_PREALLOCATE=false: the peak is what the programs used, not the 75% preallocation). Lines:

    <unit> | <figure> = <value> <unit of measure> | <context>
    compare | <figure>: fvjax <a> / reference <b> = <ratio>      (after both sides ran)
    FAILED <unit>: <reason>                                        (and the run continues)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STEP = ("step time", "model TFLOP/s", "MFU", "peak memory")
GENERATE = ("end-to-end", "denoise", "peak memory")
VAE = ("first chunk program", "later chunk program", "decode", "peak memory")
DIT_MEMORY = ("fwd+bwd", "activation memory")

# unit -> (measurement(units module, unit name, sizes), the figures it must print, in the default run).
UNITS = {
    "finetune:full": (lambda m, u, s: m.training_step(u, s, "finetune", "full"), STEP, True),
    "finetune:save_qkv_attention_out": (lambda m, u, s: m.training_step(u, s, "finetune", "save_qkv_attention_out"),
                                        STEP, True),
    # Without remat at 32,760 tokens: ~96 GiB of residuals by the per-block count (README): may not fit.
    "finetune:none": (lambda m, u, s: m.training_step(u, s, "finetune", "none"), STEP, False),
    "dmd2:full": (lambda m, u, s: m.training_step(u, s, "dmd2", "full"), STEP, True),
    "dmd2:teacher-14b": (lambda m, u, s: m.training_step(u, s, "dmd2", "full", teacher=s.teacher_14b), STEP, False),
    "generate:fvjax": (lambda m, u, s: m.generate_fvjax(u, s), GENERATE, True),
    "generate:diffusers": (lambda m, u, s: m.generate_diffusers(u, s), GENERATE, True),
    "vae:fvjax": (lambda m, u, s: m.vae_decode_fvjax(u, s), VAE, True),
    # Is the GPU peak the convolution autotuner's (its workspaces and redzone copies)? The same without it.
    "vae:fvjax-no-autotune": (lambda m, u, s: m.vae_decode_fvjax(u, s, xla_flags="--xla_gpu_autotune_level=0"), VAE,
                              True),
    "vae:fvjax-bf16": (lambda m, u, s: m.vae_decode_fvjax(u, s, "bfloat16"), VAE, False),
    "vae:diffusers": (lambda m, u, s: m.vae_decode_diffusers(u, s), ("decode", "peak memory"), True),
    "dit_memory:fvjax-none": (lambda m, u, s: m.dit_memory_fvjax(u, s, "none"), DIT_MEMORY, True),
    "dit_memory:fvjax-save_qkv_attention_out": (lambda m, u, s: m.dit_memory_fvjax(u, s, "save_qkv_attention_out"),
                                                DIT_MEMORY, False),
    "dit_memory:pytorch": (lambda m, u, s: m.dit_memory_pytorch(u, s), DIT_MEMORY, True),
}
# (figure, fvjax unit, reference unit): printed as ratios once both ran.
COMPARISONS = (
    ("end-to-end", "generate:fvjax", "generate:diffusers"),
    ("denoise", "generate:fvjax", "generate:diffusers"),
    ("decode", "vae:fvjax", "vae:diffusers"),
    ("peak memory", "vae:fvjax", "vae:diffusers"),
    ("peak memory", "vae:fvjax-no-autotune", "vae:diffusers"),
    ("peak memory", "vae:fvjax-bf16", "vae:diffusers"),
    ("fwd+bwd", "dit_memory:fvjax-none", "dit_memory:pytorch"),
    ("activation memory", "dit_memory:fvjax-none", "dit_memory:pytorch"),
    ("activation memory", "dit_memory:fvjax-save_qkv_attention_out", "dit_memory:pytorch"),
)
TIMEOUT_S = {"full": 240, "smoke": 600}   # per unit; DMD2 units get twice as long



def run_unit(name: str, smoke: bool) -> None:
    """In the unit's own process: its measurement at the sizes of this run."""
    import device_check_units as units
    from fvjax.cli_setup import enable_compilation_cache

    # As fvjax's CLIs: a rerun loads the compiled programs from JAX's persistent cache (compile_s then says
    # so). Not for the VAE units: their figures include what compiling (GPU autotuning) costs in memory.
    if not name.startswith("vae"):
        enable_compilation_cache()
    UNITS[name][0](units, name, units.SMOKE if smoke else units.FULL)


def _reason(stderr: str, returncode: int | None) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    oom = next((line for line in lines if "RESOURCE_EXHAUSTED" in line or "OutOfMemoryError" in line), None)
    return " ".join((oom or (lines[-1] if lines else f"exit status {returncode}")).split())[:300]


def drive(names: list[str], smoke: bool) -> int:
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if smoke:   # tiny shapes on a (possibly shared) CPU: one torch thread avoids OpenMP oversubscription
        env.setdefault("JAX_PLATFORMS", "cpu")
        env.setdefault("OMP_NUM_THREADS", "1")
    found: dict[tuple[str, str], float] = {}
    failures = 0
    began = time.perf_counter()
    for name in names:
        command = [sys.executable, str(HERE / "device_check.py"), "--unit", name] + (["--smoke"] if smoke else [])
        start = time.perf_counter()
        timeout = TIMEOUT_S["smoke" if smoke else "full"] * (2 if name.startswith("dmd2") else 1)
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
            stdout, stderr, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as err:
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            stderr, code = f"timed out after {timeout} s", None
        printed = set()
        for line in stdout.splitlines():
            if not line.startswith("FIGURE "):
                continue
            record = json.loads(line[len("FIGURE "):])
            printed.add(record["figure"])
            if isinstance(record["value"], (int, float)):
                found[(record["unit"], record["figure"])] = record["value"]
            context = {k: v for k, v in record.items() if k not in ("unit", "figure", "value", "of")}
            print(f"{name} | {record['figure']} = {record['value']} {record['of']} | {json.dumps(context)}", flush=True)
        missing = [figure for figure in UNITS[name][1] if figure not in printed]
        if code != 0 or missing:
            failures += 1
            why = _reason(stderr, code) if code != 0 else f"figures not printed: {', '.join(missing)}"
            print(f"FAILED {name}: {why} ({time.perf_counter() - start:.0f} s)", flush=True)
    for figure, ours, reference in COMPARISONS:
        if (ours, figure) in found and (reference, figure) in found and found[(reference, figure)]:
            a, b = found[(ours, figure)], found[(reference, figure)]
            print(f"compare | {figure}: fvjax {a:.4g} ({ours}) / reference {b:.4g} ({reference}) = {a / b:.3f}",
                  flush=True)
    print(f"device_check: {len(names)} units, {failures} failed, {time.perf_counter() - began:.0f} s", flush=True)
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (CPU): the same code, for CI")
    parser.add_argument("--only", default="", help="comma-separated unit names or prefixes (e.g. vae,dmd2:full)")
    parser.add_argument("--all", action="store_true", help="also the units left out of the default run")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--unit", help=argparse.SUPPRESS)   # internal: run one unit in this process
    args = parser.parse_args(argv)
    if args.unit:
        run_unit(args.unit, args.smoke)
        return 0
    if args.list:
        for name, (call, figures, default) in UNITS.items():
            print(f"{name}{'' if default else ' (not in the default run)'}: {', '.join(figures)}")
        return 0
    wanted = [w for w in args.only.split(",") if w]
    names = [n for n, (_, _, default) in UNITS.items()
             if (any(n == w or n.startswith(w) for w in wanted) if wanted else (default or args.all))]
    if not names:
        parser.error(f"no unit matches --only {args.only!r}; see --list")
    return drive(names, args.smoke)


if __name__ == "__main__":
    sys.exit(main())

"""Time to the first video and to the first training step, whole processes as a user meets them: the first
run (a cold compilation cache: a fresh directory) and the second (warm: the same directory again).

    python benchmarks/bench_time_to_first.py [--rounds 3] [--only generate|demo] [--fvjax-root DIR]
        [--before-root DIR]

generate: `python -m fvjax.generate` on the tiny pipeline (17x128x128, 20 UniPC steps with CFG, Wan's default
negative prompt, MP4 written) against benchmarks/diffusers_generate.py, the same video with Diffusers'
WanPipeline (from_pretrained, the call, the MP4), each its own process. demo: README's demo training
(configs/examples/tiny_dmd2.yaml on a synthetic dataset and the tiny pipeline, validation before step 1),
timed from the start of the process to the metrics.jsonl line of step 1.

Runs alternate (fvjax cold, Diffusers, fvjax warm, Diffusers per round; demo cold, demo warm) so machine load
hits every kind; medians are printed with their ratios. fvjax processes start through this script's
`--child` mode, which records JAX's compile events (jax.monitoring): how many programs compiled or came from
the cache and the seconds spent tracing, lowering and compiling them. `--fvjax-root` runs another checkout
(e.g. `git archive REV | tar -x -C DIR`); `--before-root` runs a second one alongside, each fvjax run of the
round followed by the same run of that checkout ("before_..."), for before/after figures under one load.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PROMPT = "a red cat runs on the water"
VIDEO = ["--num-frames", "17", "--height", "128", "--width", "128", "--steps", "20", "--guidance-scale", "5.0"]
_COMPILE_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
                   "/jax/core/compile/backend_compile_duration": "compile_s"}


def child(module: str, argv: list[str]) -> int:
    """Run `module`.main(argv) in this process, recording compile events into $BENCH_COMPILE_STATS."""
    import importlib

    import jax.monitoring

    stats = {"programs": 0, "cache_hits": 0, "trace_s": 0.0, "lower_s": 0.0, "compile_s": 0.0}

    def on_duration(event, duration, **_):
        if event in _COMPILE_EVENTS:
            stats[_COMPILE_EVENTS[event]] += duration
            stats["programs"] += event.endswith("backend_compile_duration")
        elif event == "/jax/compilation_cache/cache_retrieval_time_sec":
            stats["cache_hits"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)

    def write():
        with open(os.environ["BENCH_COMPILE_STATS"], "w") as out:
            json.dump(stats, out)

    atexit.register(write)
    return importlib.import_module(module).main(argv)


def _fvjax_env(root: str, home: str, stats: str) -> dict:
    """A fresh HOME: the CLIs keep their compile cache where they would for a user (~/.cache/fvjax/...)."""
    env = dict(os.environ, HOME=home, BENCH_COMPILE_STATS=stats, HF_HUB_OFFLINE="1",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                 "JAX_COMPILATION_CACHE_MAX_SIZE"):
        env.pop(name, None)
    return env


def _run(cmd: list[str], env: dict, cwd: str, step_file: str | None = None) -> dict:
    """Whole-process wall and CPU seconds; with step_file, also the seconds until it holds step 1's line."""
    start = time.perf_counter()
    before = os.times()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    step1 = None
    while step_file is not None and step1 is None and proc.poll() is None:
        if os.path.exists(step_file) and any(json.loads(line).get("step") == 1
                                             for line in open(step_file) if line.strip()):
            step1 = time.perf_counter() - start
        else:
            time.sleep(0.05)
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    result = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    if step_file is not None:
        result["step1_s"] = round(step1 if step1 is not None else wall, 2)
    return result


def _fvjax(module: str, args: list[str], root: str, home: str, work: str, step_file: str | None = None) -> dict:
    stats = os.path.join(work, "stats.json")
    result = _run([sys.executable, os.path.abspath(__file__), "--child", module, "--", *args],
                  _fvjax_env(root, home, stats), root, step_file)
    with open(stats) as f:
        result.update({k: round(v, 2) if isinstance(v, float) else v for k, v in json.load(f).items()})
    return result


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def _roots(root: str, before: str | None) -> list[tuple[str, str]]:
    return [("", root)] + ([("before_", before)] if before else [])


def bench_generate(rounds: int, root: str, work: str, pipeline: str, before: str | None = None) -> dict:
    from fvjax.families.wan.text.prompt import WAN_DEFAULT_NEGATIVE_PROMPT

    common = ["--model", pipeline, "--prompt", PROMPT, *VIDEO, "--negative-prompt", WAN_DEFAULT_NEGATIVE_PROMPT]
    ours = [*common, "--out", os.path.join(work, "fvjax.mp4"), "--no-progress"]
    theirs = [sys.executable, os.path.join(REPO, "benchmarks", "diffusers_generate.py"), *common,
              "--out", os.path.join(work, "diffusers.mp4")]
    runs = {"diffusers": []}
    for r in range(rounds):
        for phase in ("cold", "warm"):
            for prefix, tree in _roots(root, before):
                home = os.path.join(work, f"home_generate_{prefix}{r}")   # fresh per round: the first run is cold
                result = _fvjax("fvjax.generate", ours, tree, home, work)
                runs.setdefault(f"{prefix}fvjax_{phase}", []).append(result)
                print(json.dumps({"generate": f"{prefix}fvjax_{phase}", "round": r, **result}), flush=True)
            result = _run(theirs, dict(os.environ, HF_HUB_OFFLINE="1"), REPO)
            runs["diffusers"].append(result)
            print(json.dumps({"generate": "diffusers", "round": r, **result}), flush=True)
        for prefix, _ in _roots(root, before):
            shutil.rmtree(os.path.join(work, f"home_generate_{prefix}{r}"), ignore_errors=True)
    summary = {kind: {key: _median(v, key) for key in v[0]} for kind, v in runs.items()}
    for prefix, _ in _roots(root, before):
        for phase in ("warm", "cold"):
            for measure in ("wall_s", "cpu_s"):
                summary[f"{prefix}fvjax_{phase} / diffusers ({measure})"] = round(
                    summary[f"{prefix}fvjax_{phase}"][measure] / summary["diffusers"][measure], 3)
    return summary


def bench_demo(rounds: int, root: str, work: str, pipeline: str, before: str | None = None) -> dict:
    data = os.path.join(work, "demo_data")
    if not os.path.isdir(data):
        subprocess.run([sys.executable, "-m", "fvjax.data.synthetic", "--out", data, "--format", "fvjax",
                        "--num-samples", "16", "--latent-shape", "16,3,8,8", "--text-len", "16", "--text-dim", "32",
                        "--seed", "0"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    runs = {}
    for r in range(rounds):
        for phase in ("cold", "warm"):
            for prefix, tree in _roots(root, before):
                home = os.path.join(work, f"home_demo_{prefix}{r}")
                out = os.path.join(work, f"demo_out_{prefix}{r}_{phase}")
                args = ["--config", os.path.join(tree, "configs", "examples", "tiny_dmd2.yaml"),
                        "--training.model_path", pipeline, "--training.data_path", data,
                        "--training.output_dir", out, "--training.validation_dataset_file",
                        os.path.join(tree, "configs", "examples", "validation_prompts.json"),
                        "--training.max_train_steps", "1"]
                result = _fvjax("fvjax.train", args, tree, home, work, step_file=os.path.join(out, "metrics.jsonl"))
                runs.setdefault(f"{prefix}demo_{phase}", []).append(result)
                print(json.dumps({"demo": f"{prefix}demo_{phase}", "round": r, **result}), flush=True)
                shutil.rmtree(out)
        for prefix, _ in _roots(root, before):
            shutil.rmtree(os.path.join(work, f"home_demo_{prefix}{r}"), ignore_errors=True)
    summary = {kind: {key: _median(v, key) for key in v[0]} for kind, v in runs.items()}
    for prefix, _ in _roots(root, before):
        summary[f"{prefix}warm / cold (time to step 1)"] = round(
            summary[f"{prefix}demo_warm"]["step1_s"] / summary[f"{prefix}demo_cold"]["step1_s"], 3)
    return summary


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("generate", "demo"), default=None)
    parser.add_argument("--fvjax-root", default=REPO, help="the fvjax checkout to time (default: this one)")
    parser.add_argument("--before-root", default=None, help="another checkout timed alongside (before/after)")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.fvjax_root)
    before = os.path.abspath(args.before_root) if args.before_root else None
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_time_to_first_") as work:
        pipeline = os.path.join(work, "pipeline")
        subprocess.run([sys.executable, "-m", "fvjax.tiny_pipeline", "--out", pipeline], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
        summary = {"fvjax_root": root, "before_root": before, "rounds": args.rounds, "load_average_at_start": [round(x, 1) for x in load]}
        if args.only in (None, "generate"):
            summary["generate"] = bench_generate(args.rounds, root, work, pipeline, before)
        if args.only in (None, "demo"):
            summary["demo"] = bench_demo(args.rounds, root, work, pipeline, before)
        summary["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

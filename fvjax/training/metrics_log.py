"""Where metrics go: JSONL in output_dir, TensorBoard event files, W&B when installed and asked for.
Only process 0 writes; other processes get a logger that does nothing."""
from __future__ import annotations

import io
import json
import math
import os
import sys
from typing import Mapping, Sequence

import jax
import numpy as np


class MetricsLogger:
    def __init__(self, output_dir: str, trackers: tuple[str, ...] = (), project: str = "", run_name: str = "",
                 config_text: str = "", entity: str = ""):
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
            self._wandb = _start_wandb(project, run_name, output_dir, config_text, entity)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        # JSON has no Infinity/NaN: such values are written as null and named under "nonfinite"
        nonfinite = sorted(k for k, v in row.items() if k != "step" and not math.isfinite(v))
        jsonl = {k: (None if k in nonfinite else v) for k, v in row.items()}
        if nonfinite:
            jsonl["nonfinite"] = nonfinite
        self._jsonl.write(json.dumps(jsonl, allow_nan=False) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=int(step))

    def log_videos(self, step: int, key: str, videos: np.ndarray, captions: Sequence[str], fps: float,
                   files: Sequence[str]) -> None:
        """uint8 videos [N, F, H, W, 3] (already written to `files`): TensorBoard animated images
        `<key>/<i>`, W&B videos under `key` with their captions."""
        if not self.enabled:
            return
        if self._tb is not None:
            for i, frames in enumerate(videos):
                self._tb.file_writer.add_summary(_animated_image_summary(f"{key}/{i}", frames, fps), int(step))
        if self._wandb is not None:
            import wandb
            self._wandb.log({key: [wandb.Video(path, caption=caption, format="mp4")
                                   for path, caption in zip(files, captions)]}, step=int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _animated_image_summary(tag: str, frames: np.ndarray, fps: float):
    """A TensorBoard image summary holding an animated GIF (what tensorboardX's add_video writes, encoded
    with Pillow instead of moviepy)."""
    from PIL import Image
    from tensorboardX.proto.summary_pb2 import Summary

    buffer = io.BytesIO()
    first, *rest = (Image.fromarray(frame) for frame in frames)
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=int(round(1000 / fps)), loop=0)
    height, width = frames.shape[1:3]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def _start_wandb(project: str, run_name: str, output_dir: str, config_text: str, entity: str = ""):
    try:
        import wandb
    except ImportError:
        print("fvjax: warning: training.trackers asks for wandb but it is not installed "
              "(pip install 'fvjax[wandb]'); logging to JSONL and TensorBoard only", file=sys.stderr)
        return None
    run = wandb.init(project=project or "fvjax", name=run_name or None, dir=output_dir, entity=entity or None)
    if config_text:
        path = os.path.join(output_dir, "run.yaml")
        with open(path, "w") as f:
            f.write(config_text)
        run.save(path, base_path=output_dir)
    return run

"""One training clip from one video file: temporal sampling, resize + centre crop, as FastVideo does.

Temporal sampling (FastVideo's VideoTransformStage): source frame k*(src_fps/train_fps), truncated, for
k = 0 .. num_frames-1, i.e. the first num_frames frames of the video resampled to train_fps (frames
repeat when the source is slower than train_fps). A video with too few frames is skipped, not padded.
FastVideo's optional random temporal crop is not implemented: clips always start at the first frame.

Spatial: the frame is scaled so that it covers height x width (the shorter side relative to the target
aspect ratio lands exactly on the target) with FFmpeg's bilinear scaler (which filters when shrinking),
then the centre is cropped. FastVideo crops the centre to the target aspect first and then resizes with
torch's bilinear antialias filter: the same region, resampled by a different (equally smooth) filter.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from fvjax.errors import UserError
from fvjax.io.video import iter_frames, probe_video


class SkipVideo(Exception):
    """This video cannot give a clip; the message says why (logged, never silent)."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    height: int
    width: int
    num_frames: int
    fps: float


@dataclasses.dataclass(frozen=True)
class Clip:
    frames: np.ndarray        # uint8 [num_frames, height, width, 3]
    source_fps: float
    source_size: tuple[int, int]   # (height, width)
    source_duration_sec: float | None


def frame_indices(source_fps: float, spec: ClipSpec) -> np.ndarray:
    """Source frame index of each clip frame (FastVideo: np.arange(0, n, src_fps / train_fps).astype(int))."""
    return (np.arange(spec.num_frames) * (source_fps / spec.fps)).astype(np.int64)


def covering_size(height: int, width: int, spec: ClipSpec) -> tuple[int, int]:
    """The size to scale a height x width frame to so that it just covers the target size."""
    scale = max(spec.height / height, spec.width / width)
    return max(spec.height, round(height * scale)), max(spec.width, round(width * scale))


def load_clip(path: str, spec: ClipSpec) -> Clip:
    try:
        info = probe_video(path)
        wanted = frame_indices(info.fps, spec)
        needed = int(wanted[-1]) + 1
        if info.num_frames is not None and info.num_frames < needed:
            raise SkipVideo(_too_short(f"{info.num_frames} frames at {info.fps:g} fps "
                                       f"({info.num_frames / info.fps:.2f} s)", info.fps, needed, spec))
        scaled = covering_size(info.height, info.width, spec)
        top, left = (scaled[0] - spec.height) // 2, (scaled[1] - spec.width) // 2
        frames = [rgb[top:top + spec.height, left:left + spec.width]
                  for _, rgb in iter_frames(path, wanted=wanted, size=scaled)]
    except UserError as err:
        raise SkipVideo(err.message) from None
    if len(frames) < spec.num_frames:
        # The header's frame count was missing or wrong: the decoder ran out first.
        missing = int(wanted[len(frames)])
        raise SkipVideo(_too_short(f"decoding ended before source frame {missing}", info.fps, needed, spec))
    return Clip(frames=np.stack(frames), source_fps=info.fps, source_size=(info.height, info.width),
                source_duration_sec=info.duration_sec)


def _too_short(have: str, fps: float, needed: int, spec: ClipSpec) -> str:
    return (f"too short: {have}; {spec.num_frames} frames at {spec.fps:g} fps need {needed} source frames "
            f"({needed / fps:.2f} s)")


def check_spec(spec: ClipSpec) -> None:
    """Flags that cannot make a clip the Wan VAE accepts: one-line user errors."""
    if spec.num_frames < 1 or (spec.num_frames - 1) % 4:
        raise UserError("--num-frames", None, f"must be 1 + 4k (1, 5, ..., 77, 81) for the Wan VAE's 4x "
                                              f"temporal compression, got {spec.num_frames}")
    for flag, value in (("--height", spec.height), ("--width", spec.width)):
        if value < 16 or value % 16:
            raise UserError(flag, None, f"must be a positive multiple of 16 (VAE 8x and the DiT's 2x2 patches), "
                                        f"got {value}")
    if not (spec.fps > 0 and math.isfinite(spec.fps)):
        raise UserError("--fps", None, f"must be positive, got {spec.fps}")

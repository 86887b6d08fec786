"""Video files through PyAV (FFmpeg): write H.264 MP4s, read frames back, convert decoded samples to pixels.

Frames are uint8 RGB [F, H, W, 3] at this boundary. Writing goes to a temporary sibling then renames, so
a video file is complete or absent. Any file FFmpeg cannot open or decode raises
`UserError(path, "video", reason)`.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from fractions import Fraction
from typing import Iterator, Sequence

import av
import numpy as np

from fvjax.errors import UserError

# What FFmpeg can fail with on a bad file: its own errors, plus the OS and value errors PyAV raises
# for unreadable paths and streams with missing parameters.
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int | None   # the container's count; None when it does not say (then decode to know)
    duration_sec: float | None


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float = 16, crf: int = 18) -> None:
    """Write uint8 RGB frames [F, H, W, 3] as an H.264 (yuv420p) MP4, atomically.

    H and W must be even (4:2:0 chroma halves them). crf 18 is near-transparent; 0 is lossless in luma.
    """
    frames = np.asarray(frames)
    path = os.fspath(path)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise UserError(path, "frames", f"expected uint8 frames [F>0, H, W, 3], got {frames.dtype} "
                                        f"{list(frames.shape)}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise UserError(path, "frames", f"H.264 yuv420p needs an even height and width, got {height}x{width}")
    if not fps > 0:
        raise UserError(path, "fps", f"must be positive, got {fps}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", suffix=".mp4", dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the video should look like any new file
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count and duration from the container header (no decoding)."""
    path = os.fspath(path)
    try:
        with av.open(path) as container:
            stream = _video_stream(container, path)
            fps = _frame_rate(stream, path)
            frames = stream.frames or None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = None
            return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=fps,
                             num_frames=frames, duration_sec=duration)
    except _DECODE_ERRORS as err:
        raise UserError(path, "video", f"cannot read the video: {_reason(err)}") from None


def iter_frames(path: str | os.PathLike, wanted: Sequence[int] | None = None,
                size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode in order and yield (frame index, uint8 RGB [H, W, 3]) for the indices in `wanted` (sorted;
    repeats allowed; None = every frame), resized to size = (height, width) by FFmpeg's bilinear scaler
    (area-weighted when shrinking). Stops decoding after the last wanted frame."""
    path = os.fspath(path)
    wanted = None if wanted is None else sorted(int(i) for i in wanted)
    height, width = size if size is not None else (None, None)
    try:
        with av.open(path) as container:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            pos = 0
            for index, frame in enumerate(container.decode(stream)):
                if wanted is not None:
                    if pos >= len(wanted):
                        return
                    if wanted[pos] != index:
                        continue
                rgb = frame.to_ndarray(format="rgb24", width=width, height=height,
                                       interpolation="BILINEAR" if size is not None else None)
                if wanted is None:
                    yield index, rgb
                    continue
                while pos < len(wanted) and wanted[pos] == index:
                    yield index, rgb
                    pos += 1
    except _DECODE_ERRORS as err:
        raise UserError(path, "video", f"cannot decode the video: {_reason(err)}") from None


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames, uint8 RGB [F, H, W, 3], and the frame rate."""
    path = os.fspath(path)
    fps = probe_video(path).fps
    frames = [rgb for _, rgb in iter_frames(path)]
    if not frames:
        raise UserError(path, "video", "the video stream holds no decodable frames")
    return np.stack(frames), fps


def video_to_uint8(video) -> np.ndarray:
    """One decoded sample, float [3, F, H, W] in [-1, 1] (VAE output layout), to uint8 RGB [F, H, W, 3]."""
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a [3, F, H, W] video, got shape {list(video.shape)}")
    # (x + 1) * 127.5, rounded: the inverse of the x / 127.5 - 1 scaling preprocessing applies.
    pixels = np.clip(np.rint((video + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(1, 2, 3, 0))


def _video_stream(container, path: str):
    if not container.streams.video:
        raise UserError(path, "video", "the file has no video stream")
    return container.streams.video[0]


def _frame_rate(stream, path: str) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    raise UserError(path, "video", "the video stream does not state a frame rate")


def _reason(err: BaseException) -> str:
    if isinstance(err, av.FFmpegError) and err.strerror:
        return err.strerror  # without the errno and the file name, which the error line already shows
    return " ".join(str(err).split()) or type(err).__name__

"""fvjax.io.video: H.264 MP4 round trip through PyAV/FFmpeg, frame selection and resizing, bad files."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fvjax.errors import UserError
from fvjax.io.video import iter_frames, probe_video, read_video, video_to_uint8, write_mp4


def smooth_pattern(num_frames: int, height: int, width: int) -> np.ndarray:
    """Slowly varying colour waves that move from frame to frame (what H.264 codes well)."""
    t = np.arange(num_frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    red = 128 + 90 * np.sin(x / 11.0 + t / 3.0) + 0 * y
    green = 128 + 90 * np.cos(y / 9.0 - t / 4.0) + 0 * x
    blue = 40 + 170 * (x + y + 2 * t) / (width + height + 2 * num_frames)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def test_write_then_read_back(tmp_path):
    frames = smooth_pattern(17, 48, 80)
    path = tmp_path / "sub" / "clip.mp4"
    write_mp4(frames, path, fps=16)
    assert sorted(os.listdir(tmp_path / "sub")) == ["clip.mp4"]   # no temporary file left behind

    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (80, 48, 16.0, 17)
    assert info.duration_sec == pytest.approx(17 / 16, abs=1e-6)

    back, fps = read_video(path)
    assert fps == 16.0
    assert back.dtype == np.uint8 and back.shape == frames.shape
    error = np.abs(back.astype(np.int16) - frames.astype(np.int16))
    # crf 18 with 4:2:0 chroma: a smooth pattern comes back within a few levels. About 2 of them are
    # FFmpeg's default RGB<->YUV conversion (swscale without accurate rounding: even a lossless crf 0
    # round trip of a constant (200, 50, 100) comes back as (198, 49, 100)).
    assert error.mean() < 3.0, error.mean()
    assert np.percentile(error, 99) <= 12
    assert np.abs(back.astype(np.float32).mean(axis=(1, 2)) - frames.mean(axis=(1, 2))).max() < 3  # no drift


def test_other_frame_rate_and_selection_with_resize(tmp_path):
    frames = smooth_pattern(10, 32, 32)
    path = tmp_path / "clip.mp4"
    write_mp4(frames, path, fps=24)
    assert probe_video(path).fps == 24.0

    picked = list(iter_frames(path, wanted=[7, 0, 3, 3], size=(16, 24)))
    assert [i for i, _ in picked] == [0, 3, 3, 7]
    assert all(rgb.shape == (16, 24, 3) and rgb.dtype == np.uint8 for _, rgb in picked)
    # Shrinking a smooth picture keeps its colours: compare with a box-filtered original frame.
    reference = frames[3].astype(np.float32)
    assert abs(picked[1][1].astype(np.float32).mean() - reference.mean()) < 3


def test_video_to_uint8():
    video = np.linspace(-1.2, 1.2, 3 * 2 * 4 * 6, dtype=np.float32).reshape(3, 2, 4, 6)
    pixels = video_to_uint8(video)
    assert pixels.shape == (2, 4, 6, 3) and pixels.dtype == np.uint8
    expected = np.clip(np.rint((video + 1) * 127.5), 0, 255).transpose(1, 2, 3, 0)
    np.testing.assert_array_equal(pixels, expected)
    assert video_to_uint8(-np.ones((3, 1, 2, 2))).max() == 0
    assert video_to_uint8(np.ones((3, 1, 2, 2))).min() == 255


def test_corrupt_and_missing_files_are_user_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all " * 64)
    with pytest.raises(UserError, match="garbage.mp4: video: cannot read the video"):
        read_video(garbage)

    good = tmp_path / "good.mp4"
    write_mp4(smooth_pattern(8, 16, 16), good)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated.mp4: video"):
        read_video(truncated)

    with pytest.raises(UserError, match="missing.mp4: video: .*No such file"):
        probe_video(tmp_path / "missing.mp4")


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(UserError, match="even height and width"):
        write_mp4(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "odd.mp4")
    with pytest.raises(UserError, match="uint8 frames"):
        write_mp4(np.zeros((2, 16, 16, 3), np.float32), tmp_path / "float.mp4")
    assert not list(tmp_path.iterdir())

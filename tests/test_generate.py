"""`python -m fvjax.generate` on a tiny random Diffusers pipeline: MP4s read back (frame count, size),
the transformer-only form with --base-pipeline, and one-line errors for bad arguments."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fvjax.generate import main
from fvjax.io.video import read_video
from tiny_pipeline import write_tiny_wan_pipeline
from training_utils import REPO

SIZE = ["--num-frames", "5", "--height", "32", "--width", "48"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return write_tiny_wan_pipeline(tmp_path_factory.mktemp("generate") / "pipeline")


def test_unipc_with_guidance_writes_the_requested_video(pipeline, tmp_path):
    out = tmp_path / "video.mp4"
    assert main(["--model", str(pipeline), "--prompt", "a red cat runs", *SIZE, "--steps", "3",
                 "--guidance-scale", "5.0", "--seed", "1", "--out", str(out), "--no-progress"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8 and fps == 16


def test_dmd_sampler_from_a_converted_transformer_with_base_pipeline(pipeline, tmp_path):
    """A trained student arrives as an fvjax weights dir (what the trainer exports): it needs the base
    pipeline's VAE and text encoder."""
    from fvjax.weights.conversion import diffusers_to_fvjax

    student = tmp_path / "student"
    diffusers_to_fvjax(str(pipeline), str(student), None, progress=False)
    out = tmp_path / "dmd.mp4"
    assert main(["--model", str(student), "--base-pipeline", str(pipeline), "--prompt", "blue water", *SIZE,
                 "--sampler", "dmd", "--denoising-steps", "1000,757,522", "--warp-denoising-step",
                 "--out", str(out), "--fps", "8", "--no-progress"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 48, 3) and fps == 8


@pytest.mark.parametrize("args,expected", [
    (["--num-frames", "6"], "--num-frames: 6 is not 1 + 4k"),
    (["--height", "40"], "--height: 40 is not a positive multiple of 16"),
    (["--sampler", "dmd"], "--denoising-steps: the dmd sampler needs"),
    (["--sampler", "dmd", "--denoising-steps", "500,700"], "strictly decreasing"),
    (["--denoising-steps", "1000,500"], "only the dmd sampler"),
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line_errors(pipeline, tmp_path, args, expected):
    out = tmp_path / "bad.mp4"
    res = subprocess.run([sys.executable, "-m", "fvjax.generate", "--model", str(pipeline), "--prompt", "x",
                          "--out", str(out), *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fvjax: error: ") and expected in lines[0], res.stderr
    assert not out.exists()


def test_transformer_only_without_base_pipeline_is_an_error(pipeline, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(pipeline / "transformer"), "--prompt", "x", *SIZE, "--out", str(tmp_path / "v.mp4")])
    assert exit_info.value.code == 2
    assert "--base-pipeline" in capsys.readouterr().err

"""`python -m fvjax.preprocess` end to end on a tiny random Wan pipeline written by Diffusers.

Oracles: the stored latents are Diffusers' AutoencoderKLWan posterior mean of the same clip pixels (not
normalised, as FastVideo stores them); the stored text embeddings are WanPipeline.encode_prompt's
embeddings cut at the prompt's real length (the rest of WanPipeline's row is zeros). Clip extraction is
checked on videos whose frames carry their index as a grey level, and on a half black / half white frame.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fvjax.data import DataConfig, TrainData, open_source
from fvjax.errors import UserError
from fvjax.preprocess import main
from fvjax.preprocessing.clips import ClipSpec, SkipVideo, frame_indices, load_clip
from fvjax.preprocessing.inputs import list_inputs, pick_caption
from fvjax.io.video import write_mp4
from test_video_io import smooth_pattern
from tiny_pipeline import write_tiny_wan_pipeline

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, FRAMES = 32, 48, 5             # latents [16, 2, 4, 6]
LATENT_SHAPE = [16, 2, 4, 6]
FLAGS = ["--height", str(HEIGHT), "--width", str(WIDTH), "--num-frames", str(FRAMES), "--fps", "16"]

# (file, fps, frames, height, width, caption(s)); short has 3 frames at 16 fps, 5 are needed.
GOOD = [("a.mp4", 24, 12, 40, 64, "A red cat runs over the sky."),
        ("b.mp4", 16, 5, 32, 48, ["a dog in the water", "the blue video", "green cat jumps"]),
        ("sub/c.mp4", 30, 10, 48, 48, "Slowly, the dog jumps!"),
        ("d.mp4", 10, 6, 64, 48, "")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_wan_pipeline(tmp_path_factory.mktemp("model") / "tiny-wan")


def write_merged_layout(root: Path, extra_good: int = 0) -> Path:
    """FastVideo's layout: root/videos/*.mp4 + root/videos2caption.json; 4 good videos (+ extra_good more),
    one too short, one corrupt, one listed but missing."""
    entries = []
    good = list(GOOD) + [(f"extra{i}.mp4", 16, 5, 32, 48, f"extra clip {i}") for i in range(extra_good)]
    for i, (name, fps, frames, h, w, cap) in enumerate(good):
        write_mp4(np.roll(smooth_pattern(frames, h, w), 7 * i, axis=2), root / "videos" / name, fps=fps)
        entries.append({"path": name, "cap": cap if isinstance(cap, list) else [cap], "fps": fps})
    write_mp4(smooth_pattern(3, 32, 48), root / "videos" / "short.mp4", fps=16)
    (root / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    entries[1:1] = [{"path": "short.mp4", "cap": "too short"}, {"path": "corrupt.mp4", "cap": "corrupt"},
                    {"path": "gone.mp4", "cap": "missing"}]
    (root / "videos2caption.json").write_text(json.dumps(entries, indent=1))
    return root / "videos2caption.json"


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def read_skip_log(out: Path) -> dict[str, str]:
    return {e["id"]: e["reason"] for e in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}


def samples_by_id(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    source = open_source(str(out))
    metas = [json.loads(line) for shard in source.manifest["shards"]
             for line in (out / f"{shard['name']}.meta.jsonl").read_text().splitlines()]
    assert len(metas) == len(source)
    return {m["id"]: (source[i].latents, source[i].text_embeds, m) for i, m in enumerate(metas)}


@pytest.fixture(scope="module")
def full_run(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    captions = write_merged_layout(root)
    out, parquet = root.parent / "dataset", root.parent / "parquet"
    started = time.monotonic()
    assert run_cli("--model", model_dir, "--videos", captions, "--out", out, "--parquet", parquet,
                   "--batch-size", 2, "--samples-per-shard", 3, *FLAGS) == 0
    print(f"preprocess of {len(GOOD)} videos: {time.monotonic() - started:.1f} s")
    return root, out, parquet


def test_dataset_holds_vae_means_and_text_embeddings(model_dir, full_run, capsys):
    from diffusers import AutoencoderKLWan, WanPipeline

    root, out, _ = full_run
    samples = samples_by_id(out)
    assert sorted(samples) == ["a", "b", "d", "sub/c"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["latent_shape"] == LATENT_SHAPE and manifest["text_dim"] == 32
    assert [s["num_samples"] for s in manifest["shards"]] == [3, 1]
    assert not list((out / ".pending").iterdir())

    vae = AutoencoderKLWan.from_pretrained(model_dir / "vae").eval()
    pipe = WanPipeline.from_pretrained(model_dir)
    spec = ClipSpec(HEIGHT, WIDTH, FRAMES, 16)
    for item in list_inputs(str(root)):
        if item.id not in samples:
            continue
        latents, text, meta = samples[item.id]
        caption = pick_caption(item, seed=42)
        assert meta["caption"] == caption and meta["path"] == item.path

        pixels = torch.from_numpy(load_clip(item.path, spec).frames).float() / 127.5 - 1.0
        with torch.no_grad():
            expected = vae.encode(pixels.permute(3, 0, 1, 2)[None]).latent_dist.mean[0].numpy()
        assert list(latents.shape) == LATENT_SHAPE
        np.testing.assert_allclose(latents, expected, atol=2e-4 * np.abs(expected).max(), rtol=0)

        with torch.no_grad():
            embeds = pipe.encode_prompt(caption, do_classifier_free_guidance=False, max_sequence_length=512)[0][0]
        length = text.shape[0]
        assert length >= 1 and np.all(embeds[length:].numpy() == 0)   # the real length, padding removed
        np.testing.assert_allclose(text, embeds[:length].numpy(), atol=2e-5 * float(embeds.abs().max()), rtol=0)


def test_skipped_videos_are_logged_with_reasons(full_run):
    root, out, _ = full_run
    reasons = read_skip_log(out)
    assert sorted(reasons) == ["corrupt", "gone", "short"]
    assert reasons["short"].startswith("too short: 3 frames at 16 fps")
    assert "cannot read the video" in reasons["corrupt"]
    assert "video file not found" in reasons["gone"]


def test_parquet_output_equals_the_fvjax_dataset(full_run):
    _, out, parquet = full_run
    assert sorted(p.name for p in parquet.iterdir()) == ["data-chunk-00000.parquet", "data-chunk-00001.parquet"]
    ours, theirs = open_source(str(out)), open_source(str(parquet))
    assert theirs.format == "parquet" and len(theirs) == len(ours) == 4
    for i in range(4):
        np.testing.assert_array_equal(theirs[i].latents, ours[i].latents)
        np.testing.assert_array_equal(theirs[i].text_embeds, ours[i].text_embeds)


def test_the_training_data_pipeline_reads_it(full_run):
    _, out, parquet = full_run
    for path in (out, parquet):
        data = TrainData(DataConfig(data_path=str(path), global_batch_size=2, text_dim=32), 0, 1)
        batch = data.batch(1)
        assert batch["latents"].shape == (2, *LATENT_SHAPE)
        assert batch["text_embeds"].shape == (2, 512, 32) and batch["text_mask"].shape == (2, 512)
        assert np.all(np.isfinite(batch["latents"]))


def test_rerun_skips_finished_work_and_new_videos_are_added(model_dir, full_run, capsys):
    root, out, parquet = full_run
    before = {k: v[0].copy() for k, v in samples_by_id(out).items()}
    skip_log = (out / "skipped.jsonl").read_text()
    assert run_cli("--model", model_dir, "--videos", root, "--out", out, "--parquet", parquet,
                   "--batch-size", 2, "--samples-per-shard", 3, *FLAGS) == 0
    assert "0 new, 7 of 7 inputs finished by earlier runs" in capsys.readouterr().out
    assert (out / "skipped.jsonl").read_text() == skip_log          # skipped videos are not tried again
    after = samples_by_id(out)
    assert sorted(after) == sorted(before)

    # A changed setting is refused on resume, and so is dropping the parquet copy.
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--model", model_dir, "--videos", root, "--out", out, "--parquet", parquet, *FLAGS[:-2], "--fps", "24")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fvjax: error: --fps:") and "preprocessed with fps 16" in err and "\n" not in err
    with pytest.raises(SystemExit):
        run_cli("--model", model_dir, "--videos", root, "--out", out, *FLAGS)
    assert capsys.readouterr().err.startswith(f"fvjax: error: --parquet: earlier runs into {out} wrote parquet")


def test_killed_run_leaves_a_consistent_dataset_and_resumes(model_dir, tmp_path):
    captions = write_merged_layout(tmp_path / "videos", extra_good=10)
    # The reference is an uninterrupted run over the same files: libx264 (PyAV 18's) does not always encode
    # the same frames to the same bytes within one process (measured: decoded pixels of two encodes of
    # one clip differ by up to 11 levels), so videos written again are not the same videos.
    reference_out = tmp_path / "reference"
    assert run_cli("--model", model_dir, "--videos", captions, "--out", reference_out, "--samples-per-shard", 2,
                   "--batch-size", 2, *FLAGS) == 0
    out = tmp_path / "dataset"
    cmd = [sys.executable, "-m", "fvjax.preprocess", "--model", str(model_dir), "--videos", str(captions),
           "--out", str(out), "--samples-per-shard", "2", "--batch-size", "2", "--workers", "1", *FLAGS]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (out / "manifest.json").exists():   # the first shard committed: kill it now
            assert proc.poll() is None, f"preprocess exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()

    partial = open_source(str(out))             # a valid dataset of the committed shards
    assert 0 < len(partial) < len(GOOD) + 10
    # Resumed with --parquet added: the committed shards are converted too.
    assert run_cli("--model", model_dir, "--videos", captions, "--out", out, "--parquet", tmp_path / "parquet",
                   "--samples-per-shard", 2, "--batch-size", 2, *FLAGS) == 0
    resumed = samples_by_id(out)
    assert len(resumed) == len(GOOD) + 10
    assert sorted(read_skip_log(out)) == ["corrupt", "gone", "short"]
    reference = samples_by_id(reference_out)
    for name, (latents, text, _) in reference.items():   # same videos, same settings: same samples
        np.testing.assert_allclose(resumed[name][0], latents, atol=1e-5, rtol=0)
        np.testing.assert_allclose(resumed[name][1], text, atol=1e-6, rtol=0)
    assert [m["index"] for _, _, m in resumed.values()] == sorted(m["index"] for _, _, m in resumed.values())
    parquet = open_source(str(tmp_path / "parquet"))
    assert len(parquet) == len(resumed)
    np.testing.assert_array_equal(parquet[len(parquet) - 1].latents, open_source(str(out))[len(parquet) - 1].latents)


@pytest.mark.parametrize("flags,message", [
    (["--num-frames", "6"], "--num-frames: must be 1 + 4k"),
    (["--height", "40"], "--height: must be a positive multiple of 16"),
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
])
def test_bad_arguments_are_one_line_errors(model_dir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--model", model_dir, "--videos", tmp_path, "--out", tmp_path / "out", *flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fvjax: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_paths_are_one_line_errors(model_dir, tmp_path, capsys):
    for args, message in ((["--model", tmp_path / "no-model", "--videos", tmp_path], "--model: "),
                          (["--model", model_dir, "--videos", tmp_path / "no-videos"], "--videos: "),
                          (["--model", model_dir, "--videos", tmp_path / "empty"], "--videos: no videos found")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(SystemExit) as exit_info:
            run_cli(*args, "--out", tmp_path / "out")
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith(f"fvjax: error: {message}") and err.count("\n") == 1
    (tmp_path / "not-ours").mkdir()
    (tmp_path / "not-ours" / "file").write_text("x")
    write_mp4(smooth_pattern(5, 32, 48), tmp_path / "one" / "clip.mp4")
    with pytest.raises(SystemExit):
        run_cli("--model", model_dir, "--videos", tmp_path / "one", "--out", tmp_path / "not-ours")
    assert "was not written by fvjax.preprocess" in capsys.readouterr().err


def test_help_describes_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--videos", "--out", "--parquet", "--height", "--width", "--num-frames", "--fps",
                 "--batch-size", "--dtype", "--samples-per-shard", "videos2caption.json"):
        assert flag in text


# --------------------------------------------------------------------------- clips and inputs (no model)

def test_temporal_sampling_follows_fastvideo(tmp_path):
    """Frame i of the source is grey level 8*i; the clip's frame k must be source frame int(k * src/train)."""
    levels = np.arange(30) * 8
    frames = np.broadcast_to(levels[:, None, None, None], (30, 32, 48, 3)).astype(np.uint8)
    write_mp4(frames, tmp_path / "ramp.mp4", fps=30, crf=0)
    spec = ClipSpec(32, 48, 13, 16)
    clip = load_clip(str(tmp_path / "ramp.mp4"), spec)
    expected = frame_indices(30.0, spec)
    np.testing.assert_array_equal(expected, (np.arange(13) * 30 / 16).astype(int))   # FastVideo's arange
    np.testing.assert_allclose(clip.frames.mean(axis=(1, 2, 3)), levels[expected], atol=3)

    slow = ClipSpec(32, 48, 9, 16)        # an 8 fps source repeats frames to reach 16 fps
    write_mp4(frames[:6], tmp_path / "slow.mp4", fps=8, crf=0)
    means = load_clip(str(tmp_path / "slow.mp4"), slow).frames.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(means, levels[[0, 0, 1, 1, 2, 2, 3, 3, 4]], atol=3)
    with pytest.raises(SkipVideo, match="too short: 6 frames at 8 fps"):
        load_clip(str(tmp_path / "slow.mp4"), ClipSpec(32, 48, 13, 16))


def test_resize_covers_then_crops_the_centre(tmp_path):
    frame = np.zeros((64, 128, 3), np.uint8)
    frame[:, 64:] = 255                         # left half black, right half white
    write_mp4(np.stack([frame] * 2), tmp_path / "wide.mp4", fps=16, crf=0)
    clip = load_clip(str(tmp_path / "wide.mp4"), ClipSpec(32, 32, 1, 16)).frames[0].mean(axis=(0, 2))
    # 64x128 -> 32x64 (height covers 32), centre 32 columns: the edge stays in the middle.
    assert clip.shape == (32,) and clip[:14].max() < 20 and clip[18:].min() > 235


def test_input_layouts(tmp_path):
    plain = tmp_path / "plain"
    for name, caption in (("x.mp4", "first"), ("nested/y.mov", "second"), ("z.mp4", None)):
        write_mp4(smooth_pattern(2, 16, 16), plain / name.replace(".mov", ".mp4"))
        if name.endswith(".mov"):
            os.rename(plain / name.replace(".mov", ".mp4"), plain / name)
        if caption:
            (plain / name).with_suffix(".txt").write_text(caption + "\n")
    items = list_inputs(str(plain))
    assert [(i.id, i.captions, i.problem is None) for i in items] == [
        ("nested/y", ("second",), True), ("x", ("first",), True), ("z", (), False)]
    assert "no caption" in items[2].problem

    raw = tmp_path / "raw"
    write_mp4(smooth_pattern(2, 16, 16), raw / "videos" / "0.mp4")
    (raw / "videos.txt").write_text("0.mp4\n0.mp4\n")
    (raw / "prompt.txt").write_text("one\ntwo\n")
    assert [(i.id, i.captions) for i in list_inputs(str(raw))] == [("0", ("one",)), ("0#2", ("two",))]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"path": "a.mp4"}]))
    with pytest.raises(UserError, match=r"bad.json: \[0\].cap: each entry needs a caption"):
        list_inputs(str(bad))

    multi = list_inputs(str(write_merged_layout(tmp_path / "merged")))[4]
    assert multi.id == "b" and len(multi.captions) == 3
    assert {pick_caption(multi, seed) for seed in range(20)} == set(multi.captions)
    assert pick_caption(multi, 7) == pick_caption(multi, 7)


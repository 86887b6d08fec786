"""The data pipeline over both on-disk formats: values, order, processes, resume, CFG dropout, bad data."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fvjax.data import DataConfig, TrainData, detect_format
from fvjax.data.fvjax_format import write_fvjax_dataset
from fvjax.data.synthetic import main as synthetic_main, synthetic_samples
from fvjax.errors import UserError

LATENT = (16, 3, 4, 4)
DIM = 8


def _samples(n, lengths=None, seed=0):
    rng = np.random.default_rng(seed)
    lengths = lengths or [3 + i % 5 for i in range(n)]
    return [{"latents": rng.standard_normal(LATENT, dtype=np.float32),
             "text": rng.standard_normal((lengths[i], DIM), dtype=np.float32)} for i in range(n)]


def _write_fastvideo_parquet(directory, samples, rows_per_file=4, drop_column=None, text_dtype="bfloat16"):
    """FastVideo's t2v schema written directly with pyarrow, as its preprocessing does (float32 bytes;
    the dtype column may say otherwise and is ignored by the loader)."""
    os.makedirs(directory, exist_ok=True)
    for f0 in range(0, len(samples), rows_per_file):
        chunk = samples[f0:f0 + rows_per_file]
        columns = {
            "id": pa.array([f"vid{f0 + i}" for i in range(len(chunk))], pa.string()),
            "vae_latent_bytes": pa.array([s["latents"].tobytes() for s in chunk], pa.binary()),
            "vae_latent_shape": pa.array([list(s["latents"].shape) for s in chunk], pa.list_(pa.int64())),
            "vae_latent_dtype": pa.array(["float32"] * len(chunk), pa.string()),
            "text_embedding_bytes": pa.array([s["text"].tobytes() for s in chunk], pa.binary()),
            "text_embedding_shape": pa.array([list(s["text"].shape) for s in chunk], pa.list_(pa.int64())),
            "text_embedding_dtype": pa.array([text_dtype] * len(chunk), pa.string()),
            "file_name": pa.array([f"vid{f0 + i}.mp4" for i in range(len(chunk))], pa.string()),
            "caption": pa.array(["a cat"] * len(chunk), pa.string()),
            "media_type": pa.array(["video"] * len(chunk), pa.string()),
            "width": pa.array([32] * len(chunk), pa.int64()),
            "height": pa.array([32] * len(chunk), pa.int64()),
            "num_frames": pa.array([9] * len(chunk), pa.int64()),
            "duration_sec": pa.array([0.5] * len(chunk), pa.float64()),
            "fps": pa.array([16.0] * len(chunk), pa.float64()),
        }
        columns.pop(drop_column, None)
        pq.write_table(pa.table(columns), os.path.join(directory, f"data_chunk_{f0 // rows_per_file}.parquet"),
                       row_group_size=2)
    return str(directory)


def _write_fvjax(directory, samples, per_shard=4):
    return write_fvjax_dataset(str(directory), ({"latents": s["latents"], "text_embeds": s["text"]} for s in samples),
                               samples_per_shard=per_shard)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    samples = _samples(10, lengths=[3, 7, 1, 12, 5, 2, 9, 4, 6, 8])
    return samples, _write_fastvideo_parquet(root / "fastvideo" / "combined_parquet_dataset", samples), \
        _write_fvjax(root / "fvjax", samples)


def test_both_formats_decode_pad_and_mask_like_fastvideo(datasets):
    samples, parquet_dir, fvjax_dir = datasets
    assert detect_format(os.path.dirname(parquet_dir)) == "parquet"  # found recursively
    assert detect_format(fvjax_dir) == "fvjax"
    for path in (parquet_dir, fvjax_dir):
        data = TrainData(DataConfig(path, global_batch_size=4, seed=3, text_len=10), 0, 1)
        assert data.num_samples == 10 and data.steps_per_epoch == 2 and data.text_dim == DIM
        batch = data.batch(0)
        assert batch["latents"].shape == (4, *LATENT) and batch["latents"].dtype == np.float32
        assert batch["text_embeds"].shape == (4, 10, DIM) and batch["text_mask"].dtype == np.int32
        for row, idx in enumerate(data.local_sample_indices(0)):
            ref = samples[idx]
            np.testing.assert_array_equal(batch["latents"][row], ref["latents"])
            n = min(len(ref["text"]), 10)  # 12 tokens are cropped to 10 with a full mask
            np.testing.assert_array_equal(batch["text_embeds"][row, :n], ref["text"][:n])
            assert not batch["text_embeds"][row, n:].any()
            np.testing.assert_array_equal(batch["text_mask"][row], (np.arange(10) < n).astype(np.int32))


def test_formats_agree_and_order_is_deterministic(datasets):
    _, parquet_dir, fvjax_dir = datasets
    a = TrainData(DataConfig(parquet_dir, 2, seed=5), 0, 1)
    b = TrainData(DataConfig(fvjax_dir, 2, seed=5), 0, 1)
    for step in range(7):
        x, y = a.batch(step), b.batch(step)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    # One permutation, the same every epoch (FastVideo); each epoch covers every sample once.
    epoch = np.concatenate([a.global_sample_indices(s) for s in range(a.steps_per_epoch)])
    assert sorted(epoch) == list(range(10))
    np.testing.assert_array_equal(a.global_sample_indices(1), a.global_sample_indices(1 + a.steps_per_epoch))
    other_seed = TrainData(DataConfig(parquet_dir, 2, seed=6), 0, 1)
    assert any((other_seed.global_sample_indices(s) != a.global_sample_indices(s)).any() for s in range(5))
    reshuffled = TrainData(DataConfig(parquet_dir, 2, seed=5, reshuffle_each_epoch=True), 0, 1)
    e0 = np.concatenate([reshuffled.global_sample_indices(s) for s in range(5)])
    e1 = np.concatenate([reshuffled.global_sample_indices(s) for s in range(5, 10)])
    assert sorted(e0) == sorted(e1) == list(range(10)) and (e0 != e1).any()


def test_drop_last_with_a_remainder(datasets):
    _, _, fvjax_dir = datasets
    data = TrainData(DataConfig(fvjax_dir, 4, seed=0), 0, 1)
    assert data.steps_per_epoch == 2  # 10 // 4; two samples skipped each epoch
    assert len(set(np.concatenate([data.global_sample_indices(s) for s in range(2)]))) == 8


def test_processes_get_contiguous_slices_of_the_global_batch(datasets):
    _, parquet_dir, _ = datasets
    whole = TrainData(DataConfig(parquet_dir, 4, seed=1), 0, 1)
    parts = [TrainData(DataConfig(parquet_dir, 4, seed=1), p, 2) for p in range(2)]
    for step in range(5):
        full = whole.batch(step)
        local = [p.batch(step) for p in parts]
        assert local[0]["latents"].shape[0] == 2
        for k in full:
            np.testing.assert_array_equal(np.concatenate([l[k] for l in local]), full[k])
    with pytest.raises(UserError, match="train_batch_size"):
        TrainData(DataConfig(parquet_dir, 3, seed=1), 0, 2)


def test_iterator_state_resumes_the_identical_sequence(datasets):
    _, parquet_dir, _ = datasets
    cfg = DataConfig(parquet_dir, 2, seed=9, training_cfg_rate=0.3)
    straight = TrainData(cfg, 0, 1).iterator()
    expected = [next(straight) for _ in range(8)]

    first = TrainData(cfg, 0, 1).iterator()
    for _ in range(3):
        next(first)
    saved = json.loads(json.dumps(first.get_state()))  # what the checkpoint stores
    assert saved["next_step"] == 3
    resumed = TrainData(cfg, 0, 1).iterator()  # a fresh process
    resumed.set_state(saved)
    for want in expected[3:]:
        got = next(resumed)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(UserError, match="data.global_batch_size"):
        TrainData(DataConfig(parquet_dir, 4, seed=9), 0, 1).iterator().set_state(saved)


def test_cfg_dropout_zeroes_text_keeps_mask_and_is_deterministic(datasets):
    samples, _, fvjax_dir = datasets
    data = TrainData(DataConfig(fvjax_dir, 10, seed=4, training_cfg_rate=0.5, text_len=16), 0, 1)
    dropped = [data.cfg_dropped(i) for i in range(10)]
    assert 0 < sum(dropped) < 10
    batch = data.batch(0)
    for row, idx in enumerate(data.local_sample_indices(0)):
        n = len(samples[idx]["text"])
        assert batch["text_mask"][row].sum() == n  # mask kept over the original length
        assert (not batch["text_embeds"][row].any()) == dropped[idx]
    again = TrainData(DataConfig(fvjax_dir, 10, seed=4, training_cfg_rate=0.5), 0, 1)
    assert [again.cfg_dropped(i) for i in range(10)] == dropped
    # The rate is respected over many sample indices (binomial, n = 4000: 5 sigma = 0.04).
    assert abs(np.mean([data.cfg_dropped(i) for i in range(4000)]) - 0.5) < 0.04


def test_num_latent_t_crops_frames(datasets):
    samples, parquet_dir, _ = datasets
    data = TrainData(DataConfig(parquet_dir, 2, seed=0, num_latent_t=2), 0, 1)
    batch = data.batch(0)
    assert batch["latents"].shape == (2, 16, 2, 4, 4)
    np.testing.assert_array_equal(batch["latents"][0], samples[data.local_sample_indices(0)[0]]["latents"][:, :2])
    with pytest.raises(UserError, match="num_latent_t"):
        TrainData(DataConfig(parquet_dir, 2, num_latent_t=4), 0, 1)


def test_synthetic_command_writes_both_formats(tmp_path, capsys):
    for fmt in ("fvjax", "parquet"):
        out = tmp_path / fmt
        assert synthetic_main(["--out", str(out), "--format", fmt, "--num-samples", "6", "--latent-shape", "16,2,4,4",
                               "--text-len", "5", "--text-dim", "32", "--seed", "1"]) == 0
        data = TrainData(DataConfig(str(out), 3, seed=0, text_dim=32), 0, 1)
        batch = data.batch(0)
        assert batch["latents"].shape == (3, 16, 2, 4, 4) and batch["text_embeds"].shape == (3, 512, 32)
        ref = list(synthetic_samples(6, (16, 2, 4, 4), 5, 32, seed=1))
        np.testing.assert_array_equal(batch["latents"][0], ref[data.local_sample_indices(0)[0]]["latents"])
    with pytest.raises(SystemExit) as exit_info:
        synthetic_main(["--out", str(tmp_path / "bad"), "--latent-shape", "16,2,4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fvjax: error: --latent-shape")


def test_bad_data_errors_name_file_and_column(tmp_path):
    samples = _samples(4)
    missing = _write_fastvideo_parquet(tmp_path / "missing", samples, drop_column="text_embedding_shape")
    with pytest.raises(UserError, match=r"data_chunk_0\.parquet: text_embedding_shape: missing column"):
        TrainData(DataConfig(missing, 2), 0, 1)

    wrong = [dict(s) for s in samples]
    wrong[2]["text"] = wrong[2]["text"].astype(np.float16)  # bytes no longer match a float32 [L, D] shape
    wrong_dir = _write_fastvideo_parquet(tmp_path / "wrong", wrong, text_dtype="float32")
    data = TrainData(DataConfig(wrong_dir, 4, seed=0), 0, 1)
    with pytest.raises(UserError, match=r"data_chunk_0\.parquet \(row 2\): text_embedding_shape: .*float32 "
                                        r"data .*text_embedding_dtype says 'float32'"):
        data.batch(0)
    # a dtype column naming the narrower float the bytes hold is decoded as that (FastVideo would misread it)
    half = [dict(s, text=s["text"].astype(np.float16)) for s in samples]
    half_data = TrainData(DataConfig(_write_fastvideo_parquet(tmp_path / "half", half, text_dtype="float16"), 4,
                                     seed=0), 0, 1)
    np.testing.assert_array_equal(half_data.source[1].text_embeds, half[1]["text"].astype(np.float32))
    int8 = [dict(s, text=s["text"].astype(np.int8)) for s in samples]
    with pytest.raises(UserError, match=r"text_embedding_shape: .*text_embedding_dtype says 'int8'"):
        TrainData(DataConfig(_write_fastvideo_parquet(tmp_path / "int8", int8, text_dtype="int8"), 4,
                             seed=0), 0, 1).batch(0)

    mixed = [dict(s) for s in samples]
    mixed[1]["latents"] = np.zeros((16, 2, 4, 4), np.float32)
    mixed_dir = _write_fastvideo_parquet(tmp_path / "mixed", mixed)
    with pytest.raises(UserError, match=r"\(row 1\): vae_latent_shape: latent shape"):
        TrainData(DataConfig(mixed_dir, 4, seed=0), 0, 1).batch(0)

    channels = [dict(s) for s in samples]
    channels[0]["latents"] = np.zeros((4, 3, 4, 4), np.float32)
    with pytest.raises(UserError, match=r"vae_latent_shape: latents must be \[16, T, H, W\]"):
        TrainData(DataConfig(_write_fastvideo_parquet(tmp_path / "ch", channels), 2), 0, 1)

    with pytest.raises(UserError, match="text_dim 4096"):
        TrainData(DataConfig(_write_fvjax(tmp_path / "fv", samples), 2, text_dim=4096), 0, 1)

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        TrainData(DataConfig(str(tmp_path / "empty"), 2), 0, 1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="unknown dataset format"):
        TrainData(DataConfig(str(tmp_path / "other"), 2), 0, 1)
    with pytest.raises(UserError, match="does not exist"):
        TrainData(DataConfig(str(tmp_path / "nowhere"), 2), 0, 1)
    with pytest.raises(UserError, match="fewer than one global batch"):
        TrainData(DataConfig(str(tmp_path / "fv"), 8), 0, 1)

    broken = tmp_path / "fv"
    np.save(broken / "shard-00000.latents.npy", np.zeros((4, 16, 3, 4, 5), np.float32))
    with pytest.raises(UserError, match=r"shard-00000\.latents\.npy: latents: expected shape"):
        TrainData(DataConfig(str(broken), 2), 0, 1)


def test_latents_are_normalised_per_channel_with_the_vae_statistics(tmp_path):
    """FastVideo's normalize_dit_input: (x_c - mean_c) / std_c on the stored VAE means, in both formats."""
    from fvjax.families.wan.vae.config import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD

    samples = _samples(4)
    stats = dict(latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD)
    mean = np.asarray(WAN21_LATENTS_MEAN, np.float32).reshape(16, 1, 1, 1)
    std = np.asarray(WAN21_LATENTS_STD, np.float32).reshape(16, 1, 1, 1)
    for path in (_write_fvjax(tmp_path / "fvjax", samples), _write_fastvideo_parquet(tmp_path / "pq", samples)):
        raw = TrainData(DataConfig(path, global_batch_size=2), 0, 1)
        normalised = TrainData(DataConfig(path, global_batch_size=2, **stats), 0, 1)
        for index in range(4):
            expected = (raw.load_sample(index)["latents"] - mean) / std
            np.testing.assert_allclose(normalised.load_sample(index)["latents"], expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(UserError, match="16 channels but the VAE statistics have 2"):
        TrainData(DataConfig(str(tmp_path / "fvjax"), global_batch_size=2, latents_mean=(0.0, 1.0),
                             latents_std=(1.0, 1.0)), 0, 1)


def test_synthetic_latents_normalise_to_standard_normals(tmp_path):
    from fvjax.families.wan.vae.config import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD

    path = str(tmp_path / "syn")
    synthetic_main(["--out", path, "--num-samples", "8", "--latent-shape", "16,3,8,8", "--text-len", "4",
                    "--text-dim", "8"])
    data = TrainData(DataConfig(path, global_batch_size=8, latents_mean=WAN21_LATENTS_MEAN,
                                latents_std=WAN21_LATENTS_STD), 0, 1)
    latents = data.batch(0)["latents"]          # [8, 16, 3, 8, 8]: 1536 values per channel
    per_channel = latents.transpose(1, 0, 2, 3, 4).reshape(16, -1)
    assert np.all(np.abs(per_channel.mean(axis=1)) < 0.15) and np.all(np.abs(per_channel.std(axis=1) - 1) < 0.1)

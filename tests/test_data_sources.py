"""Data sources beyond one t2v dataset (spec §5): FastVideo's text_only parquet (text embeddings stored
zero-padded to 512 tokens, no latents) for methods that read text only, refused for methods that read
latents; a multi-dataset training.data_path ("a:2,b:1", a list, a mapping) whose repeat counts the
sampling follows; the preflight checks of both."""
from __future__ import annotations

import collections
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fvjax.data import DataConfig, TrainData
from fvjax.data.parquet_format import SCHEMA_TEXT_ONLY
from fvjax.data.synthetic import synthetic_samples
from fvjax.errors import UserError
from fvjax.recipe import load_recipe
from fvjax.recipe.preflight import find_problems
from fvjax.schema.data_path import DataPaths, read_data_path
from fvjax.training.checkpoint import checkpoint_root
from test_train_cli import assert_one_line_error, run
from training_utils import (TINY_LATENT, TINY_TEXT, finetune_recipe, make_data, metrics_by_step, tiny_dmd2_recipe,
                            train_in_process, write_recipe)

TEXT_LEN = 512                       # the Wan family's text_len: text_only rows are stored padded to it
DIM = TINY_TEXT[1]                   # the tiny models' text_dim
SCHEMA = pa.schema([                 # spec §5.4, FastVideo's pyarrow_schema_text_only, exactly
    pa.field("id", pa.string()),
    pa.field("text_embedding_bytes", pa.binary()),
    pa.field("text_embedding_shape", pa.list_(pa.int64())),
    pa.field("text_embedding_dtype", pa.string()),
    pa.field("caption", pa.string()),
])


def text_only_embeddings(n: int, seed: int = 0) -> list[np.ndarray]:
    """UMT5-like outputs already zero-padded to 512 tokens: sample i has 3 + i % 5 valid tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        emb = np.zeros((TEXT_LEN, DIM), np.float32)
        emb[:3 + i % 5] = rng.standard_normal((3 + i % 5, DIM), dtype=np.float32)
        out.append(emb)
    return out


def write_text_only(directory: Path, n: int = 8, seed: int = 0, rows_per_file: int = 4) -> str:
    """FastVideo's text_only parquet written with pyarrow, as its preprocess_pipeline_text does."""
    os.makedirs(directory)
    embeds = text_only_embeddings(n, seed)
    for f0 in range(0, n, rows_per_file):
        chunk = range(f0, min(n, f0 + rows_per_file))
        table = pa.table({
            "id": [f"text_prompt{i}" for i in chunk],
            "text_embedding_bytes": [embeds[i].tobytes() for i in chunk],
            "text_embedding_shape": [list(embeds[i].shape) for i in chunk],
            "text_embedding_dtype": ["float32"] * len(chunk),
            "caption": [f"prompt {i}" for i in chunk],
        }, schema=SCHEMA)
        pq.write_table(table, directory / f"data_chunk_{f0 // rows_per_file}.parquet", row_group_size=2)
    return str(directory)


@pytest.fixture(scope="module")
def text_only(tmp_path_factory) -> str:
    return write_text_only(tmp_path_factory.mktemp("text_only") / "combined_parquet_dataset")


# ---------------------------------------------------------------------------------------- text-only data

def test_our_schema_is_fastvideos_text_only_schema():
    assert SCHEMA_TEXT_ONLY.equals(SCHEMA)


def test_text_only_batches_mask_every_stored_token_and_carry_zero_latents(text_only):
    cfg = DataConfig(text_only, global_batch_size=4, seed=1, text_dim=DIM, needs_latents=False,
                     latent_shape=TINY_LATENT, latents_mean=(0.5,) * 16, latents_std=(2.0,) * 16,
                     training_cfg_rate=0.3)
    data = TrainData(cfg, 0, 1)
    assert not data.has_latents and data.num_samples == 8 and data.latent_shape == TINY_LATENT
    assert data.source.fingerprint["kind"] == "text_only"
    embeds = text_only_embeddings(8)
    for step in range(data.steps_per_epoch):
        batch = data.batch(step)
        assert batch["latents"].shape == (4, *TINY_LATENT) and not batch["latents"].any()   # not normalised
        assert batch["text_embeds"].shape == (4, TEXT_LEN, DIM)
        np.testing.assert_array_equal(batch["text_mask"], 1)   # padding included, as FastVideo
        for row, idx in enumerate(data.local_sample_indices(step)):
            expected = np.zeros_like(embeds[idx]) if data.cfg_dropped(idx) else embeds[idx]
            np.testing.assert_array_equal(batch["text_embeds"][row], expected)


def test_text_only_data_is_refused_where_latents_are_needed_or_their_shape_unknown(text_only):
    with pytest.raises(UserError, match="training.data_path: holds text embeddings only .*rollout_mode: simulate"):
        TrainData(DataConfig(text_only, 2), 0, 1)
    for shape in (None, (16, 0, 8, 8)):
        with pytest.raises(UserError, match="set training.num_latent_t, num_height and num_width"):
            TrainData(DataConfig(text_only, 2, needs_latents=False, latent_shape=shape), 0, 1)


def test_a_dataset_mixing_text_only_and_t2v_files_is_refused(tmp_path):
    root = Path(write_text_only(tmp_path / "mixed"))
    make_data(tmp_path / "t2v", num_samples=2, fmt="parquet")
    os.rename(next((tmp_path / "t2v").glob("*.parquet")), root / "zz.parquet")
    with pytest.raises(UserError, match=r"zz\.parquet: training.data_path: holds latents and text but .* holds "
                                        r"text only"):
        TrainData(DataConfig(str(root), 2, needs_latents=False, latent_shape=TINY_LATENT), 0, 1)


def test_simulate_dmd2_trains_on_text_only_parquet(tmp_path, text_only):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_dmd2_recipe(text_only, out, max_train_steps=2,
                                                                training_state_checkpointing_steps=0,
                                                                checkpoints_total_limit=0, train_batch_size=2))
    code, stdout, _ = run(["--config", str(recipe), "--dry-run"])
    assert code == 0 and "warning" not in stdout and "ready to train" in stdout, stdout
    assert train_in_process(recipe) == 0
    rows = metrics_by_step(out)
    assert sorted(rows) == [1, 2]
    assert all(math.isfinite(v) for row in rows.values() for v in row.values())
    assert rows[2]["student/update"] == 1 and "student/dmd_loss" in rows[2]
    assert (Path(checkpoint_root(str(out))) / "2").is_dir()
    # Without the training video shape the latents' shape is unknown: the dry run says so, a real run refuses.
    raw = tiny_dmd2_recipe(text_only, tmp_path / "out2", num_latent_t=0)
    code, stdout, _ = run(["--config", str(write_recipe(tmp_path / "r0.yaml", raw)), "--dry-run"])
    assert code == 0 and "warning: missing input: training.num_latent_t: is 0" in stdout


@pytest.mark.parametrize("form", ["data_latent", "finetune"])
def test_a_method_reading_latents_refuses_text_only_data(tmp_path, text_only, form):
    if form == "finetune":
        raw = finetune_recipe(text_only, tmp_path / "out")
    else:
        raw = tiny_dmd2_recipe(text_only, tmp_path / "out")
        raw["method_config"]["rollout_mode"] = "data_latent"
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    code, stdout, _ = run(["--config", str(recipe), "--dry-run"])
    assert code == 0
    assert f"warning: missing input: training.data_path: {text_only!r} holds text embeddings only" in stdout
    assert "a real run would refuse" in stdout
    code, _, err = run(["--config", str(recipe)])
    assert_one_line_error(code, err, f"{recipe}: training.data_path: {text_only!r} holds text embeddings only",
                   "training cannot start")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- multi-dataset paths

def _load_data_path(tmp_path: Path, value) -> object:
    raw = tiny_dmd2_recipe("x", tmp_path / "out")
    raw["training"]["data_path"] = value
    return load_recipe(write_recipe(tmp_path / "r.yaml", raw)).training.data_path


def test_data_path_forms_normalise(tmp_path):
    where, key = "r.yaml", "training.data_path"
    assert read_data_path("data", where, key) == "data"
    assert read_data_path(" data ", where, key) == "data"
    assert read_data_path("data:1", where, key) == "data"          # one dataset, repeat 1: that root
    assert read_data_path("", where, key) == "" and read_data_path("  ", where, key) == ""
    assert read_data_path("a:2, b:1,", where, key) == (("a", 2), ("b", 1))
    assert read_data_path("a:2,b:0", where, key) == (("a", 2),)     # repeat <= 0 dropped; repeat 2 stays
    assert read_data_path("x:y:3", where, key) == (("x:y", 3),)     # split at the last colon
    assert read_data_path(["a", "b:3"], where, key) == (("a", 1), ("b:3", 1))   # ":N" not parsed in lists
    assert read_data_path(["only"], where, key) == "only"
    assert read_data_path({"b": 2, "a": "1", "c": 0}, where, key) == (("b", 2), ("a", 1))   # mapping order
    assert read_data_path({"a": 1}, where, key) == "a"
    multi = read_data_path("a:2,b:1", where, key)
    assert isinstance(multi, DataPaths) and str(multi) == "a:2,b:1" and hash(multi) == hash((("a", 2), ("b", 1)))
    # Through the loader: an immutable, comparable recipe value.
    loaded = _load_data_path(tmp_path, {"a": 2, "b": 1})
    assert loaded == (("a", 2), ("b", 1)) and load_recipe(tmp_path / "r.yaml") == load_recipe(tmp_path / "r.yaml")
    assert hash(load_recipe(tmp_path / "r.yaml").training) is not None


@pytest.mark.parametrize("value, needle", [
    ("a:two,b:1", "'a:two': the text after the last ':' must be an integer repeat count"),
    ("hf://org/data", "'hf://org/data': the text after the last ':' must be an integer"),
    (":2", "':2' has no path before the ':'"),
    (",", "it names no dataset"),
    ("a:0,b:-1", "every dataset has a repeat count of 0 or below"),
    ([], "it names no dataset"),
    (["a", 3], "item 1 must be a non-empty path string, got the number 3"),
    ({"a": "two"}, "'a': the repeat count must be an integer, got the string 'two'"),
    ({"a": 1.5}, "'a': the repeat count must be an integer"),
    ({"a": True}, "'a': the repeat count must be an integer, got the bool true"),
    (7, "must be a path, \"path:N,path:N\", a list of paths or a mapping {path: repeat}, got the number 7"),
])
def test_bad_data_path_forms_are_one_line_errors(tmp_path, value, needle):
    raw = tiny_dmd2_recipe("x", tmp_path / "out")
    raw["training"]["data_path"] = value
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    for flags in ([], ["--dry-run"]):
        code, _, err = run(["--config", str(recipe), *flags])
        assert_one_line_error(code, err, f"{recipe}: training.data_path: {needle}")


def _two_datasets(root: Path) -> tuple[list, list]:
    """a: 4 samples in fvjax's format; b: 3 in FastVideo's parquet; distinct text embeddings (their
    valid tokens returned, to tell which sample a batch row holds)."""
    texts = []
    for name, n, fmt, seed in (("a", 4, "fvjax", 0), ("b", 3, "parquet", 1)):
        make_data(root / name, num_samples=n, fmt=fmt, seed=seed)
        texts.append([s["text_embeds"] for s in synthetic_samples(n, TINY_LATENT, *TINY_TEXT, seed=seed)])
    return texts[0], texts[1]


def _epoch_counts(data: TrainData, a_texts: list, b_texts: list) -> collections.Counter:
    """How often each sample appears in one epoch of the real (grain) pipeline."""
    seen = collections.Counter()
    iterator = data.iterator(0)
    for _ in range(data.steps_per_epoch):
        batch = next(iterator)
        for text, mask in zip(batch["text_embeds"], batch["text_mask"]):
            valid = text[:int(mask.sum())]
            found = [(name, i) for name, texts in (("a", a_texts), ("b", b_texts)) for i, t in enumerate(texts)
                     if t.shape == valid.shape and np.array_equal(t, valid)]
            assert len(found) == 1
            seen[found[0]] += 1
    return seen


def _data(data_path, batch: int = 1) -> TrainData:
    return TrainData(DataConfig(data_path, global_batch_size=batch, seed=5, text_dim=DIM, text_len=16), 0, 1)


def test_repeat_counts_decide_how_often_each_dataset_is_seen_per_epoch(tmp_path, monkeypatch):
    a_texts, b_texts = _two_datasets(tmp_path)
    monkeypatch.chdir(tmp_path)                       # relative roots, from the current directory
    (tmp_path / "cfg").mkdir()
    data_path = _load_data_path(tmp_path / "cfg", "a:2,b:1")
    assert data_path == (("a", 2), ("b", 1))
    data = _data(data_path)
    assert data.num_samples == 2 * 4 + 3 and data.steps_per_epoch == 11 and data.source.format == "mixed"
    assert _epoch_counts(data, a_texts, b_texts) == {**{("a", i): 2 for i in range(4)},
                                                     **{("b", i): 1 for i in range(3)}}
    # The list and mapping forms.
    both = _data(_load_data_path(tmp_path / "cfg", ["a", "b"]))
    assert _epoch_counts(both, a_texts, b_texts) == {**{("a", i): 1 for i in range(4)},
                                                     **{("b", i): 1 for i in range(3)}}
    mapped = _data(_load_data_path(tmp_path / "cfg", {"b": 3, "a": 1}))
    assert _epoch_counts(mapped, a_texts, b_texts) == {**{("a", i): 1 for i in range(4)},
                                                       **{("b", i): 3 for i in range(3)}}
    # Resume: the state names the datasets and their repeats; other repeat counts are refused.
    state = data.iterator(0).get_state()
    assert state["source"]["format"] == "multi" and [s["repeat"] for s in state["source"]["sources"]] == [2, 1]
    again = data.iterator(0)
    again.set_state(dict(state, next_step=3))
    np.testing.assert_array_equal(next(again)["text_embeds"], data.batch(3)["text_embeds"])
    with pytest.raises(UserError, match="data.source: the checkpoint's data state"):
        both.iterator(0).set_state(state)


def test_single_root_keeps_its_fingerprint_and_a_repeated_root_is_sampled_twice(tmp_path):
    a_texts, b_texts = _two_datasets(tmp_path)
    single = _data(str(tmp_path / "a"))
    assert single.source.fingerprint["format"] == "fvjax"        # unchanged: old checkpoints resume
    twice = _data(read_data_path(f"{tmp_path / 'a'}:2", "r", "training.data_path"))
    assert _epoch_counts(twice, a_texts, b_texts) == {("a", i): 2 for i in range(4)}


def test_preflight_checks_every_root_and_the_kind_of_data(tmp_path, monkeypatch, text_only):
    _two_datasets(tmp_path)
    monkeypatch.chdir(tmp_path)
    raw = tiny_dmd2_recipe("a:2,nowhere:1,b", tmp_path / "out")
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    code, stdout, _ = run(["--config", str(recipe), "--dry-run"])
    assert code == 0 and "training.data_path: 'nowhere' does not exist on this machine" in stdout
    assert "  data        a:2,nowhere:1,b:1: " in stdout
    code, _, err = run(["--config", str(recipe)])
    assert_one_line_error(code, err, f"{recipe}: training.data_path: 'nowhere' does not exist on this machine")
    raw["training"]["data_path"] = {"a": 1, text_only: 1}     # text-only and latent datasets in one run
    problems = find_problems(load_recipe(write_recipe(recipe, raw)))
    assert [p.key for p in problems] == ["training.data_path"]
    assert f"{text_only!r} holds text embeddings only but 'a' holds latents" in problems[0].message
    with pytest.raises(UserError, match="holds text embeddings only but .* holds latents; the datasets of one run"):
        TrainData(DataConfig(load_recipe(recipe).training.data_path, 2, needs_latents=False,
                             latent_shape=TINY_LATENT), 0, 1)
    raw["training"]["data_path"] = [text_only, text_only]    # text only twice: fine for simulate
    assert find_problems(load_recipe(write_recipe(recipe, raw))) == []

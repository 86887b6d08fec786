"""Integrity: checkpoints and fvjax weights directories carry checksums, written at save, verified at resume,
load and conversion (issue 17, item 2).

A corrupt newest checkpoint (truncated or zeroed state file, flipped bytes, missing state/_METADATA, a
truncated metadata JSON, missing state/) makes `latest` resume from the previous one, saying so in one line,
and the resumed run ends bit-identical to the uninterrupted one; naming it explicitly is a one-line error
(exit 2). A zeroed or bit-flipped file of an fvjax weights directory is an error naming the file, at load and
in `python -m fvjax.convert`.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training_utils import (REPO, checkpoint_arrays, finetune_recipe, make_data, metrics_by_step, train_in_process,
                            write_recipe)
from fvjax import convert
from fvjax.errors import UserError
from fvjax.io import checksums
from fvjax.training.checkpoint import Checkpointer, checkpoint_root, resolve_resume

STEPS = 3


# ----------------------------------------------------------------------------------------- corruptions

def _largest_state_file(step_dir: str) -> str:
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
             if os.path.isfile(f)]
    return max(files, key=os.path.getsize)


def truncate(step_dir):
    path = _largest_state_file(step_dir)
    os.truncate(path, os.path.getsize(path) // 2)


def zero(step_dir):
    path = _largest_state_file(step_dir)
    Path(path).write_bytes(bytes(os.path.getsize(path)))


def flip(step_dir):
    path = _largest_state_file(step_dir)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x04   # one bit
    Path(path).write_bytes(bytes(data))


def drop_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def truncate_metadata_json(step_dir):
    path = os.path.join(step_dir, "meta", "metadata")
    os.truncate(path, os.path.getsize(path) // 2)


def drop_state(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


CORRUPTIONS = {   # name -> (damage, what the reason names)
    "truncated state file": (truncate, "truncated"),
    "zeroed state file": (zero, "checksum mismatch"),
    "flipped bit": (flip, "checksum mismatch"),
    "missing _METADATA": (drop_metadata, "state/_METADATA: missing"),
    "truncated metadata JSON": (truncate_metadata_json, "meta/metadata: truncated"),
    "missing state/": (drop_state, "state/: missing"),
}


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("fvjax: error:")]
    assert len(lines) == 1, err
    assert err.strip().splitlines()[-1] == lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------- the checksum list

def test_checksum_list_detects_each_kind_of_damage(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    (d / "sub" / "big").write_bytes(rng.bytes(3 * 1024 * 1024 + 17))
    (d / "small").write_bytes(b"{}")
    (d / "empty").write_bytes(b"")
    (d / "rewritten").write_text("orbax rewrites this")
    assert not checksums.verify(d)   # no list yet: unverified
    checksums.write(d, names_only=["rewritten"])
    assert checksums.verify(d)
    (d / "rewritten").write_text("changed, listed by name only")
    (d / "extra").write_text("files added later are not checked")
    assert checksums.verify(d)

    def damaged(edit) -> checksums.Corrupt:
        work = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
        shutil.copytree(d, work)
        edit(work)
        with pytest.raises(checksums.Corrupt) as err:
            checksums.verify(work)
        return err.value

    big = "sub/big"
    bad = damaged(lambda w: os.truncate(w / big, 100))
    assert (bad.path, bad.reason) == (big, f"truncated (100 of {3 * 1024 * 1024 + 17} bytes)")
    bad = damaged(lambda w: (w / big).write_bytes(bytes(3 * 1024 * 1024 + 17)))
    assert (bad.path, bad.reason) == (big, "checksum mismatch")

    def flip_last(w):
        data = bytearray((w / big).read_bytes())
        data[-1] ^= 1
        (w / big).write_bytes(bytes(data))

    assert damaged(flip_last).reason == "checksum mismatch"
    assert str(damaged(lambda w: os.remove(w / "small"))) == "small: missing"
    assert str(damaged(lambda w: os.remove(w / "rewritten"))) == "rewritten: missing"
    assert str(damaged(lambda w: shutil.rmtree(w / "sub"))) == "sub/: missing"
    assert damaged(lambda w: (w / "empty").write_text("x")).reason == "1 bytes, 0 expected"
    bad = damaged(lambda w: os.truncate(w / checksums.LIST_NAME, 40))
    assert bad.path == checksums.LIST_NAME and "unreadable checksum list" in bad.reason


_SHARED_VERIFY = """
import sys
from fvjax.training.distributed import maybe_initialize
maybe_initialize()
import jax
from fvjax.io import checksums
assert jax.process_count() == 2
for d in sys.argv[1:]:
    try:
        print("result:", "verified" if checksums.verify(d) else "unverified", flush=True)
    except checksums.Corrupt as bad:
        print(f"result: corrupt {bad}", flush=True)
"""


def test_several_processes_share_the_reading_and_agree(tmp_path):
    """Each of 2 processes hashes every other block; a mismatch only one of them reads is reported by both."""
    good = tmp_path / "good"
    good.mkdir()
    for i in range(6):
        (good / f"f{i}").write_bytes(np.random.default_rng(i).bytes(1000 + i))
    checksums.write(good)
    dirs = [str(good)]
    for i in (0, 1, 4, 5):   # blocks of both processes' shares
        bad = tmp_path / f"bad{i}"
        shutil.copytree(good, bad)
        data = bytearray((bad / f"f{i}").read_bytes())
        data[7] ^= 1
        (bad / f"f{i}").write_bytes(bytes(data))
        dirs.append(str(bad))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", _SHARED_VERIFY, *dirs], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, "JAX_PROCESS_ID": str(i)})
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    want = ["verified"] + [f"corrupt f{i}: checksum mismatch" for i in (0, 1, 4, 5)]
    results = [[line[len("result: "):] for line in out.splitlines() if line.startswith("result: ")]
               for out, _ in outs]
    assert results == [want, want]


# ----------------------------------------------------------------------------------------- Checkpointer

def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {"student": {"params": {"w": jnp.asarray(rng.standard_normal((64, 32), dtype=np.float32))},
                        "step": jnp.int32(seed)}}


@pytest.mark.parametrize("async_save", [True, False])
def test_saves_carry_a_checksum_list_and_restore_checks_it(tmp_path, async_save, capsys):
    root = checkpoint_root(tmp_path)
    with Checkpointer(root, interval_steps=1, async_save=async_save) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, _state(step))
    reader = Checkpointer(root, read_only=True)
    assert all(reader.verify(step) for step in (1, 2, 3))
    assert not any(".orbax-checkpoint-tmp" in name for name in os.listdir(root))
    flip(os.path.join(root, "3"))
    with pytest.raises(UserError, match=r"/3: is corrupt \(state/.*: checksum mismatch\)"):
        reader.restore(3)
    assert reader.latest_step() == 3 and reader.latest_sound_step() == 2   # named by the non-finite stop
    np.testing.assert_array_equal(reader.restore(2).state["student"]["params"]["w"],
                                  _state(2)["student"]["params"]["w"])

    # No list (an older fvjax, or a crash between finalize and the list): restored unverified, said once.
    os.remove(os.path.join(root, "2", checksums.LIST_NAME))
    capsys.readouterr()
    assert not reader.verify(2)
    reader.restore(2)
    point = resolve_resume("latest", tmp_path)
    assert (point.step, point.verified, [s for s, _ in point.skipped]) == (2, False, [3])
    err = capsys.readouterr().err
    assert err.count("has no fvjax_checksums.json") == 1 and "using it unverified" in err


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_resolve_resume_falls_back_and_a_named_corrupt_checkpoint_is_refused(tmp_path, name):
    damage, reason = CORRUPTIONS[name]
    root = checkpoint_root(tmp_path)
    with Checkpointer(root, interval_steps=1) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, _state(step))
    damage(os.path.join(root, "3"))
    for arg, out in (("latest", tmp_path), (str(tmp_path), None), (root, None)):
        point = resolve_resume(arg, out)
        assert point.step == 2 and point.verified and [s for s, _ in point.skipped] == [3]
        note = point.fallback_note()
        assert note.startswith(f"checkpoint 3 in {root} is corrupt (") and reason in note
        assert note.endswith("; resuming from checkpoint 2")
    with pytest.raises(UserError, match="--resume-from-checkpoint: .*/3 is corrupt") as err:
        resolve_resume(os.path.join(root, "3"))
    assert reason in str(err.value) and "\n" not in str(err.value)


def test_no_checkpoint_that_verifies_is_one_error(tmp_path):
    root = checkpoint_root(tmp_path)
    with Checkpointer(root, interval_steps=1) as ckpt:
        for step in (1, 2):
            ckpt.save(step, _state(step))
    zero(os.path.join(root, "2"))
    drop_state(os.path.join(root, "1"))
    with pytest.raises(UserError, match=r"no checkpoint in .* verifies, every one is corrupt \(2: state/.*: "
                                        r"checksum mismatch; 1: state/: missing\)"):
        resolve_resume("latest", tmp_path)


# ----------------------------------------------------------------------------------------- training runs

@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run with a checkpoint at every step."""
    root = tmp_path_factory.mktemp("straight")
    data = make_data(root / "data", num_samples=4)
    recipe = finetune_recipe(data, root / "out", max_train_steps=STEPS, training_state_checkpointing_steps=1)
    assert train_in_process(write_recipe(root / "r.yaml", recipe)) == 0
    return recipe, root / "out"


def _damaged_copy(straight, tmp_path, name) -> tuple[Path, Path, str]:
    recipe, out = straight
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    os.remove(copy / "metrics.jsonl")   # only the resumed run's rows
    root = checkpoint_root(copy)
    CORRUPTIONS[name][0](os.path.join(root, str(STEPS)))
    path = write_recipe(tmp_path / "r.yaml", {**recipe, "training": {**recipe["training"], "output_dir": str(copy)}})
    return copy, path, root


def test_training_checkpoints_all_verify(straight):
    _, out = straight
    ckpt = Checkpointer(checkpoint_root(out), read_only=True)
    assert ckpt.all_steps() == list(range(1, STEPS + 1))
    assert all(ckpt.verify(step) for step in ckpt.all_steps())
    assert checksums.verify(out / "student" / "params")   # the exported weights


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_latest_resumes_from_the_newest_good_checkpoint_bit_exactly(straight, tmp_path, name, capsys):
    _, out = straight
    copy, recipe, root = _damaged_copy(straight, tmp_path, name)
    capsys.readouterr()
    assert train_in_process(recipe, "--resume-from-checkpoint", "latest") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    notes = [line for line in err.splitlines() if "is corrupt" in line]
    assert len(notes) == 1, err
    assert notes[0].startswith(f"fvjax: checkpoint {STEPS} in {root} is corrupt (")
    assert CORRUPTIONS[name][1] in notes[0]
    assert notes[0].endswith(f"; resuming from checkpoint {STEPS - 1} (set aside as {STEPS}.corrupt)")
    assert os.path.isdir(os.path.join(root, f"{STEPS}.corrupt"))

    # The resumed run redid the last step: the same metrics and the same final state, bit for bit.
    resumed, want = metrics_by_step(copy), metrics_by_step(out)
    assert sorted(resumed) == [STEPS]
    assert resumed[STEPS]["student/loss"] == want[STEPS]["student/loss"]
    assert resumed[STEPS]["student/grad_norm"] == want[STEPS]["student/grad_norm"]
    got, expected = checkpoint_arrays(copy, STEPS), checkpoint_arrays(out, STEPS)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert Checkpointer(root, read_only=True).verify(STEPS)


@pytest.mark.parametrize("name", ["zeroed state file", "missing state/"])
def test_a_named_corrupt_checkpoint_is_one_error_exit_2(straight, tmp_path, name, capsys):
    copy, recipe, root = _damaged_copy(straight, tmp_path, name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        train_in_process(recipe, "--resume-from-checkpoint", os.path.join(root, str(STEPS)))
    assert stop.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{root}/{STEPS} is corrupt (" in line and CORRUPTIONS[name][1] in line


# ----------------------------------------------------------------------------------------- weights directories

@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from fvjax.families.registry import get_family
    from fvjax.families.wan.config import PRESETS
    from fvjax.models.params import nest
    from fvjax.weights import write_fvjax_dir

    family, config = get_family("wan", "test", "family"), PRESETS["tiny"]
    rng = np.random.default_rng(0)
    params = nest({p: rng.standard_normal(s, dtype=np.float32) for p, s in family.leaf_shapes(config).items()})
    d = tmp_path_factory.mktemp("weights") / "fv"
    write_fvjax_dir(d, family, config, params)
    return d


def _largest_params_file(d: Path) -> Path:
    return max((p for p in (d / "params").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("kind", ["zeroed", "bit-flipped"])
def test_a_damaged_weights_file_is_named_at_load_and_by_convert(weights, tmp_path, kind, capsys):
    from fvjax.weights import load_params

    d = tmp_path / "fv"
    shutil.copytree(weights, d)
    victim = _largest_params_file(d)
    data = bytearray(victim.read_bytes())
    if kind == "zeroed":
        data = bytearray(len(data))
    else:
        data[len(data) // 3] ^= 0x80
    victim.write_bytes(bytes(data))
    rel = victim.relative_to(d / "params").as_posix()

    with pytest.raises(UserError) as err:
        load_params(d)
    assert str(err.value).startswith(f"{d / 'params' / rel}: checksum mismatch: the fvjax weights directory")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        convert.main(["fvjax-to-diffusers", "--src", str(d), "--dst", str(tmp_path / "out"), "--no-progress"])
    assert stop.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{d / 'params' / rel}: checksum mismatch" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_weights_without_a_checksum_list_load_unverified(weights, tmp_path, capsys):
    from fvjax.weights import load_params

    d = tmp_path / "fv"
    shutil.copytree(weights, d)
    listing = json.loads((d / "params" / checksums.LIST_NAME).read_text())
    assert listing["algorithm"] == "crc32" and listing["files"]
    os.remove(d / "params" / checksums.LIST_NAME)
    capsys.readouterr()
    _, params = load_params(d)
    load_params(d)
    err = capsys.readouterr().err
    assert err.count("has no fvjax_checksums.json") == 1
    _, good = load_params(weights)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(good)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

"""Diffusers <-> fvjax weight conversion and loading, against checkpoints written by diffusers itself.

Round trips are byte-identical (files, and tensor by tensor as read by the safetensors library), the
exported directory loads in diffusers and reproduces the original outputs exactly, and
`fvjax.load_transformer` matches the PyTorch model from every kind of path.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from jax.sharding import NamedSharding
from safetensors.numpy import save_file

import fvjax
from fvjax import convert
from fvjax.models.params import flatten
from fvjax.families.wan.transformer import param_logical_axes
from fvjax.sharding import logical_to_spec
from fvjax.weights import load_params, restore_fvjax_dir
from fvjax.weights.safetensors_io import SafetensorsWriter, TensorSpec
from wan_torch_reference import fvjax_params, max_rel_err, torch_model
from weights_util import CFG, make_hf_cache, make_pipeline_dir, random_inputs, safetensors_contents

SHARD = "30KB"  # small enough that the tiny model is sharded into several files
FP32_TOL = 1e-4  # of the output's scale, as the model parity tests


@pytest.fixture(scope="module")
def model():
    return torch_model(CFG, seed=1)


@pytest.fixture(scope="module")
def dirs(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    single = root / "single"
    model.save_pretrained(single)
    sharded = root / "sharded"
    model.save_pretrained(sharded, max_shard_size=SHARD)
    pipeline = make_pipeline_dir(single, root / "pipeline")
    fv = root / "fv"
    assert convert.main(["diffusers-to-fvjax", "--src", str(single), "--dst", str(fv), "--no-progress"]) == 0
    return {"root": root, "single": single, "sharded": sharded, "pipeline": pipeline, "fv": fv}


def torch_forward(model, x, t, c) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(c), return_dict=False)[0].numpy()


def assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_round_trip_single_file_is_byte_identical(dirs):
    out = dirs["root"] / "back_single"
    assert convert.main(["fvjax-to-diffusers", "--src", str(dirs["fv"]), "--dst", str(out), "--no-progress"]) == 0
    original = safetensors_contents(dirs["single"])
    assert len(original) == 15 + 27 * CFG.num_layers
    assert safetensors_contents(out) == original  # same keys, dtypes, shapes and bytes
    assert_same_files(out, dirs["single"])  # and the files themselves (config.json included)


def test_round_trip_sharded_is_byte_identical(dirs):
    fv = dirs["root"] / "fv_sharded"
    # The real CLI in its own process: exit status 0, progress bar on stderr.
    proc = subprocess.run([sys.executable, "-m", "fvjax.convert", "diffusers-to-fvjax", "--src", str(dirs["sharded"]),
                           "--dst", str(fv)], capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr
    assert "100%" in proc.stderr
    assert len(list(dirs["sharded"].glob("*.safetensors"))) > 2
    out = dirs["root"] / "back_sharded"
    assert convert.main(["fvjax-to-diffusers", "--src", str(fv), "--dst", str(out), "--max-shard-size", SHARD,
                         "--no-progress"]) == 0
    assert_same_files(out, dirs["sharded"])  # same shard split, index.json and bytes
    # Unsharded export of the same weights: the same tensors in one file.
    one = dirs["root"] / "back_one"
    assert convert.main(["fvjax-to-diffusers", "--src", str(fv), "--dst", str(one), "--no-progress"]) == 0
    assert [p.name for p in one.glob("*.safetensors")] == ["diffusion_pytorch_model.safetensors"]
    assert safetensors_contents(one) == safetensors_contents(dirs["sharded"])


def test_converted_params_equal_an_independent_mapping(model, dirs):
    # wan_torch_reference maps the torch state dict by hand (the model helper's code, not the key map).
    config, params = restore_fvjax_dir(dirs["fv"], as_numpy=True)
    assert config == CFG
    ours, ref = flatten(params), flatten(fvjax_params(model, CFG.num_layers))
    assert ours.keys() == ref.keys()
    for path, value in ref.items():
        assert ours[path].dtype == np.float32 and np.array_equal(ours[path], value), path


def test_exported_dir_loads_in_diffusers_with_same_outputs(model, dirs):
    out = dirs["root"] / "back_single"
    if not out.exists():
        convert.main(["fvjax-to-diffusers", "--src", str(dirs["fv"]), "--dst", str(out), "--no-progress"])
    loaded = WanTransformer3DModel.from_pretrained(out).eval()
    x, t, c = random_inputs(CFG)
    assert np.array_equal(torch_forward(loaded, x, t, c), torch_forward(model, x, t, c))


def test_bfloat16_conversion(model, dirs):
    fv = dirs["root"] / "fv_bf16"
    assert convert.main(["diffusers-to-fvjax", "--src", str(dirs["pipeline"]), "--dst", str(fv), "--dtype",
                         "bfloat16", "--no-progress"]) == 0
    _, params = restore_fvjax_dir(fv, as_numpy=True)
    ref = flatten(fvjax_params(model, CFG.num_layers))
    for path, leaf in flatten(params).items():
        assert leaf.dtype == ml_dtypes.bfloat16, path
        assert np.array_equal(leaf, ref[path].astype(ml_dtypes.bfloat16)), path  # round to nearest even, as torch
    out = dirs["root"] / "back_bf16"
    assert convert.main(["fvjax-to-diffusers", "--src", str(fv), "--dst", str(out), "--no-progress"]) == 0
    bf16_dir = dirs["root"] / "torch_bf16"
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(bf16_dir)
    assert safetensors_contents(out) == safetensors_contents(bf16_dir)  # torch's own fp32 -> bf16 cast
    loaded = WanTransformer3DModel.from_pretrained(out, torch_dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16


@pytest.mark.parametrize("how", ["uniform", "diffusers-mixed"])
def test_half_precision_checkpoints_round_trip(model, dirs, how):
    # Without --dtype each leaf keeps its stored dtype, so both a uniform bf16 checkpoint and Diffusers'
    # own bf16 save (its keep-in-fp32 modules stay fp32: mixed dtypes) come back byte for byte.
    src = dirs["root"] / f"bf16_{how}"
    if how == "uniform":
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(src)
    else:
        WanTransformer3DModel.from_pretrained(dirs["single"], torch_dtype=torch.bfloat16).save_pretrained(src)
    dtypes = {d for d, _, _ in safetensors_contents(src).values()}
    assert dtypes == ({"torch.bfloat16"} if how == "uniform" else {"torch.bfloat16", "torch.float32"})
    fv, back = dirs["root"] / f"fv_{how}", dirs["root"] / f"back_{how}"
    assert convert.main(["diffusers-to-fvjax", "--src", str(src), "--dst", str(fv), "--no-progress"]) == 0
    assert convert.main(["fvjax-to-diffusers", "--src", str(fv), "--dst", str(back), "--no-progress"]) == 0
    assert_same_files(back, src)


@pytest.mark.parametrize("kind", ["single", "fv"])
def test_load_transformer_matches_torch(model, dirs, kind):
    loaded = fvjax.load_transformer(str(dirs[kind]))
    x, t, c = random_inputs(CFG, frames=4, h=4, w=6, text=7)
    c[:, 5:] = 0.0  # zero-padded text, as the pipeline passes it
    ours = loaded(x, t, c)  # numpy in
    assert isinstance(ours, jax.Array) and ours.shape == (2, CFG.out_channels, 4, 4, 6)
    err, rel = max_rel_err(ours, torch_forward(model, x, t, c))
    assert rel <= FP32_TOL, (err, rel)
    again = loaded(jax.numpy.asarray(x), jax.numpy.asarray(t), jax.numpy.asarray(c))  # jax in
    assert np.array_equal(np.asarray(again), np.asarray(ours))


def test_every_path_kind_loads_the_same_params(dirs, tmp_path, monkeypatch):
    _, ref = load_params(dirs["single"])
    cache = tmp_path / "hub"
    make_hf_cache(cache, "fvjax-test/tiny-wan", dirs["pipeline"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref_flat = flatten(ref)
    for path in (dirs["sharded"], dirs["pipeline"], dirs["fv"], "fvjax-test/tiny-wan"):
        config, params = load_params(path)
        assert config == CFG
        flat = flatten(params)
        assert flat.keys() == ref_flat.keys()
        for p, leaf in flat.items():
            assert isinstance(leaf, jax.Array) and np.array_equal(np.asarray(leaf), np.asarray(ref_flat[p])), (path, p)
    _, bf16 = load_params(dirs["fv"], dtype="bfloat16")
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(bf16)} == {np.dtype(ml_dtypes.bfloat16)}


def test_load_params_places_leaves_sharded(dirs):
    mesh = jax.make_mesh((8,), ("fsdp",))
    rules = [("embed", "fsdp"), ("heads", "fsdp"), ("mlp", "fsdp"), ("mod_embed", "fsdp")]
    shardings = jax.tree_util.tree_map(lambda axes: NamedSharding(mesh, logical_to_spec(axes, rules, mesh)),
                                       param_logical_axes(CFG), is_leaf=lambda x: isinstance(x, tuple))
    _, ref = load_params(dirs["single"])
    for path in (dirs["single"], dirs["fv"]):
        _, params = load_params(path, shardings=shardings)
        flat, want = flatten(params), flatten(shardings)
        for p, leaf in flat.items():
            assert leaf.sharding == want[p], p
            assert np.array_equal(np.asarray(leaf), np.asarray(flatten(ref)[p])), p
            if any(leaf.sharding.spec):  # a sharded leaf: no device holds all of it
                assert all(s.data.size * 8 == leaf.size for s in leaf.addressable_shards), p


def test_failed_conversion_leaves_no_dst(dirs, monkeypatch):
    import fvjax.weights.conversion as conversion
    import fvjax.weights.diffusers_writer as writer

    def disk_full(*args, **kwargs):
        target = Path(args[0])  # the temporary output dir, or the first safetensors file inside it
        (target / "partial" if target.is_dir() else target).write_text("half a file")
        raise OSError(28, "No space left on device")

    root = dirs["root"]
    monkeypatch.setattr(conversion, "write_fvjax_dir", disk_full)
    with pytest.raises(OSError):
        conversion.diffusers_to_fvjax(dirs["single"], root / "dst_fail", progress=False)
    monkeypatch.setattr(writer, "SafetensorsWriter", disk_full)
    with pytest.raises(OSError):
        conversion.fvjax_to_diffusers(dirs["fv"], root / "dst_fail2", progress=False)
    leftovers = [p.name for p in root.iterdir() if p.name.startswith((".dst_fail", "dst_fail"))]
    assert leftovers == []


def test_existing_dst_is_refused(dirs, capsys):
    with pytest.raises(SystemExit) as exc:
        convert.main(["diffusers-to-fvjax", "--src", str(dirs["single"]), "--dst", str(dirs["fv"]), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fvjax: error: --dst:") and "already exists" in err[0]


def test_convert_recipes_run(dirs):
    # The shell recipes in convert/, on the tiny checkpoint instead of the published one.
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "SRC": str(dirs["pipeline"])}
    fv, back = dirs["root"] / "recipe_fv", dirs["root"] / "recipe_back"
    for argv in (["bash", "convert/wan2.1_t2v_1.3b_to_fvjax.sh", str(fv), "float32"],
                 ["bash", "convert/student_to_diffusers.sh", str(fv), str(back)]):
        proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert safetensors_contents(back) == safetensors_contents(dirs["single"])


def test_safetensors_writer_takes_tensors_in_any_order(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"b.weight": rng.standard_normal((3, 5)).astype(np.float32), "a.bias": np.arange(4, dtype=np.float16),
               "c": rng.standard_normal((2, 2, 2)).astype(np.float32)}
    save_file(tensors, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    specs = [TensorSpec(n, a.dtype, a.shape) for n, a in tensors.items()]
    with SafetensorsWriter(tmp_path / "ours.safetensors", specs, metadata={"format": "pt"}) as writer:
        for name in ("c", "a.bias", "b.weight"):  # neither the file's order nor the specs'
            writer.write(name, tensors[name])
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    with pytest.raises(ValueError, match="1 tensor.s. never written, e.g. c"):
        with SafetensorsWriter(tmp_path / "short.safetensors", specs) as writer:
            writer.write("a.bias", tensors["a.bias"])
            writer.write("b.weight", tensors["b.weight"])

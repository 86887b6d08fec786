"""KD's teacher trajectories: the grid is FastVideo's, t_list is checked against it, the cache command
makes what the teacher sampler makes, resumes to the same bytes, and refuses other settings in one line."""
from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import yaml

from fvjax.errors import UserError
from fvjax.methods.kd import cache
from fvjax.methods.kd.schedule import _torch_linspace, teacher_euler, trajectory_timesteps
from training_utils import REPO, make_data, write_recipe

STEPS = 8     # teacher steps of the tiny recipe (FastVideo's default is 48)


def test_linspace_is_torchs():
    for n in (5, 9, 49, 97, 1001):
        np.testing.assert_array_equal(_torch_linspace(1.0, 0.0, n), torch.linspace(1.0, 0.0, n).numpy())


def test_trajectory_timesteps_are_fastvideos():
    # FastVideo's SelfForcingFlowMatchScheduler(48, shift 5, sigma_min 0, extra_one_step) timesteps, truncated.
    sigmas = torch.linspace(1.0, 0.0, 49)[:-1]
    sigmas = 5 * sigmas / (1 + 4 * sigmas)
    expected = [int(t) for t in (sigmas * 1000).tolist()]
    got = trajectory_timesteps(48, 5.0)
    assert got.tolist() == expected
    # The warped 4-step list sits on states 0, 12, 24, 36; 995 (the scenario's first) on state 1.
    assert got[[0, 1, 12, 24, 36]].tolist() == [1000, 995, 937, 833, 625]
    table = teacher_euler(48, 5.0)
    assert float(table.sigmas[0]) == 1.0 and float(table.sigmas[-1]) == 0.0
    assert np.all(np.diff(np.asarray(table.sigmas)) < 0)


def kd_recipe(data: str, cache_dir: Path, output_dir: Path, **method) -> dict:
    """configs/examples/tiny_kd.yaml with test paths and `method` overrides."""
    recipe = yaml.safe_load((REPO / "configs/examples/tiny_kd.yaml").read_text())
    recipe["training"].update(data_path=str(data), output_dir=str(output_dir))
    recipe["method_config"].update(teacher_path_cache=str(cache_dir), **method)
    return recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("kd_data") / "tiny", num_samples=4)


@pytest.fixture(scope="module")
def made(tmp_path_factory, data):
    """The cache made by `python -m fvjax.kd_cache` in one uninterrupted run."""
    from fvjax.kd_cache import main

    root = tmp_path_factory.mktemp("kd_cache")
    recipe = write_recipe(root / "recipe.yaml", kd_recipe(data, root / "cache", root / "out"))
    assert main(["--config", str(recipe)]) == 0
    return root / "recipe.yaml", root / "cache"


def _files(cache_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(cache_dir).as_posix(): p.read_bytes() for p in sorted(cache_dir.rglob("*")) if p.is_file()}


def test_cache_layout(made):
    _, cache_dir = made
    names = _files(cache_dir)
    assert set(names) == {"COMPLETE", "metadata.json"} | {f"samples/{i:08d}.safetensors" for i in range(4)}
    meta = cache.read_metadata(cache_dir)
    assert meta["timesteps"] == [1000, 937, 833, 625] and meta["teacher_inference_steps"] == STEPS
    assert meta["teacher"] == "tiny-teacher" and meta["num_samples"] == 4


def test_trajectories_equal_the_teacher_sampler(made):
    """Each stored state is the teacher's Euler sampler (fvjax.schedulers.sampling.sample) run directly from the
    sample's noise for that many steps; the endpoint is the whole run."""
    from fvjax.methods.kd.generate import initial_noise, model_fn_of
    from fvjax.recipe import load_recipe
    from fvjax.schedulers.flow_euler import FlowMatchEuler
    from fvjax.schedulers.sampling import sample
    from fvjax.sharding.logical import use_rules
    from fvjax.sharding.mesh import make_mesh, select_devices
    from fvjax.sharding.rules import rules_for
    from fvjax.training.roles import build_runtime, compute_dtype
    from safetensors.numpy import load_file

    recipe_path, cache_dir = made
    recipe = load_recipe(recipe_path)
    mesh = make_mesh(recipe.mesh, select_devices(recipe.mesh))
    with use_rules(mesh, rules_for(recipe.mesh)[1]):
        runtime = build_runtime(recipe, mesh, rules_for(recipe.mesh)[1])
        teacher = runtime.models["teacher"]
        model_fn = model_fn_of(teacher, compute_dtype(recipe.training.mixed_precision))
        table = teacher_euler(STEPS, 5.0)
        states_at = {0: 0, 2: 1, 4: 2, 6: 3}   # 1000, 937, 833, 625 on the 8-step shift-5 grid
        for index in (0, 3):
            stored = load_file(cache.sample_file(cache_dir, index))
            n = int(stored["text_embeds"].shape[0])
            text = np.zeros((1, 512, 32), np.float32)
            text[0, :n] = stored["text_embeds"]
            noise = initial_noise(recipe.training.seed, index, (16, 3, 8, 8))[None]
            clean = sample(model_fn, runtime.frozen["teacher"], noise, table, text)
            np.testing.assert_allclose(stored["clean"], np.asarray(clean[0]), rtol=1e-6, atol=1e-6)
            for step, slot in states_at.items():
                partial = FlowMatchEuler(timesteps=table.timesteps[:step], sigmas=table.sigmas[:step + 1])
                want = np.asarray(noise[0]) if step == 0 else np.asarray(
                    sample(model_fn, runtime.frozen["teacher"], noise, partial, text)[0])
                np.testing.assert_allclose(stored["states"][slot], want, rtol=1e-6, atol=1e-6, err_msg=f"state {step}")
        assert not np.allclose(stored["states"][0], stored["clean"], atol=0.1)


def test_cache_command_resumes_to_the_same_bytes(tmp_path, made):
    """An interrupted run (two samples written, a half-written temporary file left) completes on rerun, and
    the cache is byte-identical to the uninterrupted one."""
    from fvjax.kd_cache import main

    recipe_path, straight = made
    resumed = tmp_path / "cache"
    shutil.copytree(straight, resumed)
    (resumed / "COMPLETE").unlink()
    for i in (1, 3):
        cache.sample_file(resumed, i).unlink()
    (resumed / "samples" / ".00000001.safetensors.tmp-99999").write_bytes(b"half")
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["method_config"]["teacher_path_cache"] = str(resumed)
    assert main(["--config", str(write_recipe(tmp_path / "r.yaml", recipe))]) == 0
    (resumed / "samples" / ".00000001.safetensors.tmp-99999").unlink()
    assert _files(resumed) == _files(straight)


def test_other_settings_are_refused_in_one_line(tmp_path, made, capsys):
    from fvjax.kd_cache import main

    recipe_path, cache_dir = made
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(recipe_path), "--training.seed", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"fvjax: error: {cache_dir / 'metadata.json'}: seed: is 0 but the recipe makes 1; this cache "
                       f"was made for other settings: delete {cache_dir} or give another method_config.teacher_path_cache")


def test_t_list_off_the_trajectory_names_the_nearest(tmp_path, data):
    from fvjax.recipe import load_recipe

    # FastVideo's causal_t2v.yaml: [999, 937, 833, 624, 0]; 999 is not on the 48-step shift-5 trajectory.
    recipe = write_recipe(tmp_path / "r.yaml", kd_recipe(data, tmp_path / "c", tmp_path / "o", teacher_inference_steps=48,
                                                         t_list=[999, 937, 833, 624, 0]))
    with pytest.raises(UserError) as err:
        load_recipe(recipe)
    assert err.value.line().endswith("method_config.t_list[0]: is 999, not a timestep of the teacher's 48-step "
                                     "trajectory (shift 5); the nearest is 1000")


def test_incomplete_cache_without_teacher_is_one_error(tmp_path, data, capsys):
    from training_utils import train_in_process

    recipe = kd_recipe(data, tmp_path / "cache", tmp_path / "out")
    del recipe["models"]["teacher"]      # allowed (the teacher is optional once the cache is complete)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(path)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"fvjax: error: {path}: models.teacher: missing; the KD trajectory cache {tmp_path / 'cache'} is incomplete "
        "(0 of 4 samples) and only a teacher can make the rest: add models.teacher or complete it with python -m "
        "fvjax.kd_cache")
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_fastvideo_kd_recipes_make_their_defaults_explicit():
    from fvjax.recipe import load_recipe

    plans = REPO / "tests/recipes/fastvideo_train/plans"
    causal = load_recipe(plans / "kd_causal_step1.yaml")
    m = causal.method_config
    assert (causal.method, m.step_index, m.num_frames_per_block, m.teacher_inference_steps) == ("kd", "block", 3, 48)
    # the trajectory's shift is the pipeline's; teacher_guidance_scale 3.5 is read and dropped (FastVideo ignores it)
    assert (m.flow_shift, m.teacher_guidance_scale, m.t_list) == (5.0, 1.0, (995, 937, 833, 625, 0))
    assert causal.roles["student"].family == "wan_causal" and causal.roles["teacher"].family == "wan"
    plain = load_recipe(plans / "kd_t2v.yaml").method_config
    assert (plain.step_index, plain.t_list) == ("batch", (1000, 750, 500, 250, 0))


def test_eight_devices_make_the_one_device_trajectories(tmp_path, made):
    """The teacher sharded over 8 simulated devices (2 replicas x 2 fsdp x 2 sp; a data-parallel group of samples
    at a time) makes the 1-device cache up to float32 rounding."""
    import subprocess
    import sys

    from safetensors.numpy import load_file

    recipe_path, straight = made
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["training"].update(num_gpus=8, sp_size=2, hsdp_replicate_dim=2, hsdp_shard_dim=4, train_batch_size=1)
    recipe["method_config"]["teacher_path_cache"] = str(tmp_path / "cache")
    res = subprocess.run([sys.executable, "-m", "fvjax.kd_cache", "--config", str(write_recipe(tmp_path / "r.yaml", recipe))],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for i in range(4):
        want, got = load_file(cache.sample_file(straight, i)), load_file(cache.sample_file(tmp_path / "cache", i))
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, err_msg=f"{i} {key}")


def test_student_inputs_main_and_clean_context():
    """Each frame's input is its block's trajectory state at the drawn index, with that state's timestep and
    sigma (FastVideo main: never the clean endpoint); with clean_context a block may take the endpoint at
    timestep 0 and sigma 0 and leaves the loss."""
    import jax.numpy as jnp

    from fvjax.methods.kd.config import KDConfig
    from fvjax.methods.kd.update import student_inputs
    from fvjax.schedulers.few_step import NoiseLevels

    levels = NoiseLevels(5.0)
    rng = np.random.default_rng(0)
    b, k, frames = 16, 4, 6
    trajectory = jnp.asarray(rng.standard_normal((b, k, 2, frames, 2, 2)), jnp.float32)
    clean = jnp.asarray(rng.standard_normal((b, 2, frames, 2, 2)), jnp.float32)
    t_list = (1000, 937, 833, 625, 0)
    for clean_context in (False, True):
        cfg = KDConfig(t_list=t_list, num_frames_per_block=2, clean_context=clean_context)
        got = student_inputs(cfg, levels, trajectory, clean, jax.random.key(1))
        index = np.asarray(got.index)
        assert index.shape == (b, frames) and np.all(index[:, 0::2] == index[:, 1::2])
        assert index.max() == (k if clean_context else k - 1) and index.min() == 0
        states = np.concatenate([np.asarray(trajectory), np.asarray(clean)[:, None]], axis=1)
        for s in range(b):
            for f in range(frames):
                np.testing.assert_array_equal(got.x_t[s, :, f], states[s, index[s, f], :, f])
                assert got.timestep[s, f] == t_list[index[s, f]]
                sigma = 0.0 if index[s, f] == k else float(levels.sigma(t_list[index[s, f]]))
                assert got.sigma[s, 0, f, 0, 0] == sigma
                assert got.weight[s, 0, f, 0, 0] == (index[s, f] < k)


def test_clean_context_needs_block_indices(tmp_path, data):
    from fvjax.recipe import load_recipe

    recipe = write_recipe(tmp_path / "r.yaml", kd_recipe(data, tmp_path / "c", tmp_path / "o", clean_context=True,
                                                         step_index="batch"))
    with pytest.raises(UserError) as err:
        load_recipe(recipe)
    assert err.value.line().endswith("method_config.clean_context: is true, which needs step_index: block (clean blocks "
                                     "are context for later blocks)")


def test_prompts_from_fastvideo_text_only_parquet(tmp_path, made):
    """FastVideo's text_only parquet (prompt embeddings, no video: the Self-Forcing data) is a KD source: the
    trajectories' shape comes from the recipe (num_latent_t, num_height, num_width)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.numpy import load_file

    from fvjax.kd_cache import main

    rng = np.random.default_rng(0)
    texts = [rng.standard_normal((3 + i, 32)).astype(np.float32) for i in range(2)]
    (tmp_path / "prompts").mkdir()
    pq.write_table(pa.Table.from_pylist([{"id": f"p{i}", "text_embedding_bytes": t.tobytes(),
                                          "text_embedding_shape": list(t.shape), "text_embedding_dtype": "float32"}
                                         for i, t in enumerate(texts)]), tmp_path / "prompts" / "data_chunk_0.parquet")
    recipe_path, _ = made
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["training"].update(data_path=str(tmp_path / "prompts"), num_latent_t=2, train_batch_size=2)
    recipe["method_config"]["teacher_path_cache"] = str(tmp_path / "cache")
    assert main(["--config", str(write_recipe(tmp_path / "r.yaml", recipe))]) == 0
    for i, text in enumerate(texts):
        sample = load_file(cache.sample_file(tmp_path / "cache", i))
        assert sample["states"].shape == (4, 16, 2, 8, 8) and sample["clean"].shape == (16, 2, 8, 8)
        np.testing.assert_array_equal(sample["text_embeds"], text)

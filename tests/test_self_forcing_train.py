"""Self-Forcing end to end: a tiny causal student distilled from a closed-form teacher gets closer to it
chunk by chunk; the trainer on the tiny config in Phase 3 form and in FastVideo's current schema; resume
after SIGKILL is bit-exact; 8 simulated devices give the 1-device run."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from fvjax.families.wan.causal import PRESETS as CAUSAL_PRESETS, CausalWanTransformer
from fvjax.families.wan.config import PRESETS
from fvjax.families.wan.transformer import WanTransformer
from fvjax.io.video import read_video
from fvjax.methods.dmd2.config import CFG_STANDARD
from fvjax.methods.dmd2.update import NEGATIVE_PROMPT
from fvjax.methods.self_forcing.config import SelfForcingConfig
from fvjax.methods.self_forcing.rollout import make_rollout
from fvjax.methods.self_forcing.schedule import SelfForcingLevels
from fvjax.methods.self_forcing.update import make_update, rollout_steps
from fvjax.models.params import params_of
from fvjax.training.optim import OptimizerConfig, build_optimizer
from fvjax.training.roles import RoleModel, RoleState
from test_dmd2_train import EIGHT_DEVICE_POOL_THREADS
from test_dmd2_units import ClosedFormRole
from training_utils import (REPO, assert_same_arrays, checkpoint_arrays, kill_after_checkpoint, make_data,
                            metrics_by_step, role_arrays, same_arrays, train_command, train_in_process,
                            write_recipe)

# ----------------------------------------------------- a distillation whose teacher is a known function

MU, STD, SHIFT = 0.5, 0.5, 5.0
LEVELS = SelfForcingLevels(SHIFT)
SAMPLE = (16, 6, 4, 4)   # C, F, H, W: two causal chunks of 3 latent frames


def gaussian_teacher_velocity(params, x_t, t, text):
    """The exact flow-matching velocity for data x0 ~ N(mu, std^2) per element (x0_hat = E[x0 | x_t]);
    the teacher's samples are exactly N(mu, std^2), whatever the chunk."""
    sigma = LEVELS.sigma(t).reshape(-1, 1, 1, 1, 1)
    a = 1 - sigma
    x0 = params["mu"] + a * params["s2"] / (a * a * params["s2"] + sigma ** 2) * (x_t - a * params["mu"])
    return (x_t - x0) / sigma


def _role(name: str, model, lr: float):
    opt = OptimizerConfig(learning_rate=lr, betas=(0.0, 0.999), max_grad_norm=1.0)
    tx = build_optimizer(opt)
    params = params_of(model)
    return (RoleModel(name, model.config, nnx.graphdef(model), True, opt, tx),
            RoleState(params, tx.init(params), None, jnp.zeros((), jnp.int32)))


def _gaussian_w2(a: np.ndarray) -> float:
    """The 2-Wasserstein distance from the Gaussian fit of pooled samples to the teacher's N(mu, std^2)."""
    return float(np.hypot(a.mean() - MU, a.std() - STD))


def test_causal_student_learns_the_few_step_version_of_a_known_teacher():
    """Distance: per chunk, the 2-Wasserstein distance between the Gaussian fit of the student's pooled
    streaming samples (the 3-step chunk-by-chunk sampler, every chunk exiting at the last step: spec §5's
    inference) and the teacher's exact distribution N(mu, std^2). The teacher's output is Gaussian per
    element, so for it mean and std are the whole story, and W2 between 1-D Gaussians is exactly
    hypot(mean gap, std gap). Per chunk, because the later chunk is produced against the earlier one's
    cached context: both must improve for the causal rollout to have learnt."""
    student, student_state = _role("student", CausalWanTransformer(CAUSAL_PRESETS["tiny-causal"],
                                                                   rngs=nnx.Rngs(params=jax.random.key(0))), 1e-3)
    critic, critic_state = _role("critic", WanTransformer(PRESETS["tiny"], rngs=nnx.Rngs(params=jax.random.key(0))),
                                 1e-3)
    teacher = ClosedFormRole("teacher", None, None, False, velocity=gaussian_teacher_velocity)
    cfg = SelfForcingConfig(dmd_denoising_steps=(1000, 750, 500), warp_denoising_step=True, flow_shift=SHIFT,
                            generator_update_interval=2, real_score_guidance_scale=1.0,
                            real_score_guidance_form=CFG_STANDARD, min_timestep_ratio=0.0, max_timestep_ratio=1.0)
    batch_size = 4
    text = jnp.asarray(np.random.default_rng(0).standard_normal((batch_size, 8, 32)), jnp.float32)
    batch = {"latents": jnp.zeros((1, batch_size) + SAMPLE), "text_embeds": text[None],
             "text_mask": jnp.ones((1, batch_size, 8), jnp.int32)}
    frozen = {"teacher": {"mu": jnp.float32(MU), "s2": jnp.float32(STD ** 2)},
              NEGATIVE_PROMPT: {"embeds": jnp.zeros((8, 32)), "mask": jnp.zeros((8,), jnp.int32)}}
    update = jax.jit(make_update(cfg, {"student": student, "critic": critic, "teacher": teacher}, jnp.float32),
                     donate_argnums=(0,))
    repeats = 8   # 32 videos of 768 elements per chunk
    sampler = make_rollout(dataclasses.replace(cfg, last_step_only=True), student, rollout_steps(cfg), LEVELS,
                           jnp.float32)

    @jax.jit
    def student_samples(params, key):
        eval_batch = {"latents": jnp.zeros((repeats * batch_size,) + SAMPLE), "text_embeds": jnp.tile(text, (repeats, 1, 1))}
        return sampler(params, eval_batch, key, grad=False).x0

    def per_chunk(params):
        x0 = np.asarray(student_samples(params, jax.random.key(11)))
        return [_gaussian_w2(x0[:, :, :3]), _gaussian_w2(x0[:, :, 3:])]

    before = per_chunk(student_state.params)
    states = {"student": student_state, "critic": critic_state}
    for step in range(1, 201):
        states, metrics = update(states, frozen, batch, jax.random.fold_in(jax.random.key(0), step))
    after = per_chunk(states["student"].params)
    # Measured: W2 1.03 -> 0.40 in both chunks after 200 steps (100 student updates); the random student's
    # samples have mean ~0.03 / std ~1.41, the trained student's ~0.47 / ~0.90 (the teacher's 0.5 / 0.5).
    for b, a in zip(before, after):
        assert a < 0.5 * b, (before, after)


# ------------------------------------------------------------------ the trainer, tiny causal Wan

STEPS = 4
HALF = 2
INTERVAL = 2


def sf_recipe(data_path, output_dir, example: str = "tiny_self_forcing.yaml", **training) -> dict:
    """An example recipe with test-sized settings: a checkpoint after every step, no validation videos."""
    recipe = yaml.safe_load((REPO / "configs/examples" / example).read_text())
    if "recipe" in recipe:   # Phase 3
        recipe["training"].update(data_path=str(data_path), output_dir=str(output_dir), max_train_steps=STEPS,
                                  training_state_checkpointing_steps=1, checkpoints_total_limit=0,
                                  train_batch_size=4)
        recipe["training"].update(training)
        recipe["method_config"]["generator_update_interval"] = INTERVAL
    else:                    # FastVideo's current schema
        recipe["training"]["data"].update(data_path=str(data_path), train_batch_size=4)
        recipe["training"]["loop"]["max_train_steps"] = STEPS
        recipe["training"]["checkpoint"].update(output_dir=str(output_dir), training_state_checkpointing_steps=1,
                                                checkpoints_total_limit=0)
        recipe["method"]["generator_update_interval"] = INTERVAL
    return recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "tiny", num_samples=8)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("straight")
    assert train_in_process(write_recipe(root / "recipe.yaml", sf_recipe(data, root / "out"))) == 0
    return root / "out"


def test_trainer_steps_the_causal_student_on_update_steps_and_the_critic_every_step(straight_run):
    rows = metrics_by_step(straight_run)
    previous = checkpoint_arrays(straight_run, 1)
    assert not any("teacher" in k for k in previous)
    for step in range(2, STEPS + 1):
        current = checkpoint_arrays(straight_run, step)
        update = step % INTERVAL == 0
        assert rows[step]["student/update"] == float(update)
        assert same_arrays(role_arrays(current, "student"), role_arrays(previous, "student")) == (not update), step
        assert not same_arrays(role_arrays(current, "critic", "params"), role_arrays(previous, "critic", "params")), step
        assert np.isfinite(rows[step]["critic/flow_loss"]) and (rows[step]["student/dmd_loss"] > 0) == update
        previous = current


def test_fastvideo_schema_twin_trains_the_same_run(tmp_path, data, straight_run):
    """tiny_self_forcing_fastvideo_train.yaml (SelfForcingMethod, WanCausalModel) is the Phase 3 recipe."""
    out = tmp_path / "fastvideo"
    recipe = sf_recipe(data, out, "tiny_self_forcing_fastvideo_train.yaml")
    assert train_in_process(write_recipe(tmp_path / "recipe.yaml", recipe)) == 0
    expected, got = checkpoint_arrays(straight_run, STEPS), checkpoint_arrays(out, STEPS)
    assert expected.keys() == got.keys()
    assert_same_arrays(expected, got)


def test_resume_after_sigkill_is_bit_exact(tmp_path, data, straight_run):
    killed = tmp_path / "killed"
    long = write_recipe(tmp_path / "long.yaml", sf_recipe(data, killed, max_train_steps=100 * STEPS))
    assert kill_after_checkpoint(long, killed, HALF) == -9
    resumed = tmp_path / "resumed"
    recipe = write_recipe(tmp_path / "recipe.yaml", sf_recipe(data, resumed))
    assert train_in_process(recipe, "--resume-from-checkpoint", str(killed / "checkpoints" / str(HALF))) == 0
    expected, got = checkpoint_arrays(straight_run, STEPS), checkpoint_arrays(resumed, STEPS)
    assert expected.keys() == got.keys() and role_arrays(got, "student", "opt_state")
    assert_same_arrays(expected, got)


def test_eight_devices_match_one_device(tmp_path, data, straight_run):
    # 8 devices: 2 replicas x 2 fsdp x 2 sp; 4 data-parallel groups of 1 sample = the straight run's batch of 4.
    eight = tmp_path / "eight"
    recipe = sf_recipe(data, eight, max_train_steps=HALF, training_state_checkpointing_steps=HALF, num_gpus=8,
                       sp_size=2, hsdp_replicate_dim=2, hsdp_shard_dim=4, train_batch_size=1)
    env = {**os.environ, "PJRT_NPROC": str(EIGHT_DEVICE_POOL_THREADS)}
    res = subprocess.run(train_command(write_recipe(tmp_path / "eight.yaml", recipe)), cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    assert res.returncode == 0, f"trainer exited {res.returncode}: {res.stderr[-3000:]}"
    m1, m8 = metrics_by_step(straight_run), metrics_by_step(eight)
    for step in range(1, HALF + 1):
        for key in ("student/dmd_loss", "critic/flow_loss", "critic/grad_norm"):
            np.testing.assert_allclose(m8[step][key], m1[step][key], rtol=1e-4, err_msg=f"{key} at step {step}")
    p1, p8 = checkpoint_arrays(straight_run, HALF), checkpoint_arrays(eight, HALF)
    assert p1.keys() == p8.keys()
    for name in p1:
        scale = max(float(np.max(np.abs(p1[name]))), 1e-6)
        np.testing.assert_allclose(p8[name], p1[name], rtol=1e-4, atol=1e-5 * scale, err_msg=name)


@pytest.mark.parametrize("change, needle", [
    ({"models": {"student": {"family": "wan", "path": "tiny"}}},
     "models.student.family: is 'wan' but method 'self_forcing' needs a wan_causal model"),
    ({"models": {"critic": {"family": "wan_causal", "path": "tiny-causal-framewise"}}},
     "models.critic.family: is 'wan_causal' but method 'self_forcing' needs a wan model"),
    ({"method_config": {"chunk_size": 3}}, "method_config.chunk_size: is 3 but the causal student's num_frames_per_block is 1"),
    ({"method_config": {"rollout_mode": "data_latent"}}, "rollout_mode must be simulate"),
])
def test_roles_and_chunks_that_cannot_self_force_are_one_line_errors(tmp_path, data, change, needle):
    from test_train_cli import run

    recipe = sf_recipe(data, tmp_path / "out")
    for section, values in change.items():
        for key, value in values.items():
            recipe[section][key] = value
    code, _, err = run(["--config", str(write_recipe(tmp_path / "recipe.yaml", recipe))])
    errors = [line for line in err.splitlines() if line.startswith("fvjax: error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert needle in errors[0], err


def test_validation_renders_with_the_causal_streaming_sampler(tmp_path, data):
    """Self-Forcing's validation spec streams the student chunk by chunk (fvjax/inference/streaming.py) on
    the rollout's (warped) schedule; during a tiny run its MP4s appear before the first step and after."""
    from fvjax.methods.self_forcing.validation import StreamingValidation
    from fvjax.recipe import parse_recipe
    from fvjax.training.validation import sampler_specs
    from tiny_pipeline import write_tiny_wan_pipeline

    prompts = tmp_path / "validation.json"
    prompts.write_text(json.dumps({"data": [{"caption": "a red cat runs"}, {"caption": "blue water"}]}))
    out = tmp_path / "run"
    recipe = sf_recipe(data, out, max_train_steps=2, training_state_checkpointing_steps=0,
                       model_path=str(write_tiny_wan_pipeline(tmp_path / "pipeline")), log_validation=True,
                       validation_steps=2, validation_dataset_file=str(prompts))
    (spec,) = sampler_specs(parse_recipe(yaml.safe_dump(recipe), "recipe.yaml"))
    assert isinstance(spec, StreamingValidation) and spec.step_count == 3 and not spec.uses_guidance
    np.testing.assert_allclose(spec.denoising_steps, [1000, 937.5, 833.333], rtol=1e-6)   # warped, shift 5
    assert train_in_process(write_recipe(tmp_path / "recipe.yaml", recipe)) == 0
    frames = (recipe["training"]["num_latent_t"] - 1) * 4 + 1
    for step in (0, 2):
        for i in range(2):
            video, fps = read_video(out / f"validation_step_{step}_inference_steps_3_video_{i}.mp4")
            assert video.shape == (frames, 64, 64, 3) and fps == 16

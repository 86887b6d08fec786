"""Self-Forcing's pieces against independent references: the scheduler grid (recomputed in torch as
FastVideo's SelfForcingFlowMatchScheduler does), the warp table, the exit steps; the two-phase rollout
on the tiny causal Wan: phase 2's x0 equals the no-grad rollout's, and its gradient equals autodiff
through a naive unrolled rollout (a Python loop over chunks and steps, gradient only at each chunk's exit
forward, inputs and cache constants: spec self_forcing.md §3's gradient structure); the MFU FLOP count."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fvjax.families.wan.causal import PRESETS, CausalWanTransformer, block_sizes, empty_cache, write_chunk
from fvjax.methods.self_forcing import METHOD
from fvjax.methods.self_forcing.config import SDE, SelfForcingConfig
from fvjax.methods.self_forcing.rollout import chunk_starts, initial_noise, make_rollout, step_noise_key
from fvjax.methods.self_forcing.schedule import SelfForcingLevels, exit_indices, self_forcing_table, warp_steps
from fvjax.methods.self_forcing.update import rollout_steps
from fvjax.models.params import params_of
from fvjax.training.roles import RoleModel


# ------------------------------------------------------------------------------------ grid, warp, exits

@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_grid_is_fastvideos_self_forcing_scheduler(shift):
    raw = torch.linspace(1.0, 0.0, 1001)[:-1]                 # sigma_min 0, extra_one_step
    sigmas = shift * raw / (1 + (shift - 1) * raw)
    table = self_forcing_table(shift)
    np.testing.assert_allclose(table.sigmas, sigmas.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(table.timesteps, (sigmas * 1000).numpy(), rtol=1e-6, atol=1e-4)
    levels = SelfForcingLevels(shift)
    t = jnp.asarray([[1000.0, 937.5, 4.0], [500.2, 0.0, 999.9]])   # nearest grid point, per frame
    nearest = sigmas.numpy()[np.abs((sigmas * 1000).numpy()[None, None] - np.asarray(t)[..., None]).argmin(-1)]
    np.testing.assert_allclose(np.asarray(levels.sigma(t)), nearest, rtol=1e-6)


def test_per_frame_noising_and_the_ode_step():
    levels = SelfForcingLevels(5.0)
    rng = np.random.default_rng(1)
    x0, eps = (jnp.asarray(rng.standard_normal((2, 3, 4, 2, 2)), jnp.float32) for _ in range(2))
    t = jnp.asarray([[1000.0, 937.5, 625.0, 100.0], [500.0, 500.0, 250.0, 4.98]])
    sigma = np.asarray(levels.sigma(t))[:, None, :, None, None]          # each frame its own level
    x_t = levels.add_noise_frames(x0, eps, t)
    np.testing.assert_allclose(x_t, (1 - sigma) * x0 + sigma * eps, rtol=1e-6, atol=1e-6)
    # ode: the noise implied by (x_t, x0) is carried to the next level, so a perfect x0 lands on the
    # same noise path: exactly add_noise(x0, eps, t_next).
    t_next = t * 0.5
    np.testing.assert_allclose(levels.ode_renoise_frames(x_t, x0, t, t_next), levels.add_noise_frames(x0, eps, t_next),
                               rtol=1e-5, atol=1e-5)


def test_warp_table():
    np.testing.assert_allclose(warp_steps([1000, 750, 500, 250], 5.0), [1000, 937.5, 833.3333, 625], rtol=1e-6)
    cfg = SelfForcingConfig(dmd_denoising_steps=(1000, 750, 500, 250), flow_shift=5.0)
    np.testing.assert_array_equal(rollout_steps(cfg), [1000, 750, 500, 250])   # unwarped: as written


def test_exit_indices():
    keys = jax.random.split(jax.random.key(0), 200)
    per_chunk = np.stack([exit_indices(k, 7, 4, same_step=False, last_step_only=False) for k in keys])
    assert set(np.unique(per_chunk)) == {0, 1, 2, 3}
    assert (per_chunk.std(axis=1) > 0).mean() > 0.9                       # chunks draw their own
    shared = np.stack([exit_indices(k, 7, 4, same_step=True, last_step_only=False) for k in keys])
    assert (shared == shared[:, :1]).all() and set(np.unique(shared)) == {0, 1, 2, 3}
    last = exit_indices(keys[0], 7, 4, same_step=False, last_step_only=True)
    np.testing.assert_array_equal(last, [3] * 7)


def test_step_flops_counts_spec_forwards():
    forward = {"student": 10.0, "critic": 10.0, "teacher": 100.0}
    cfg = SelfForcingConfig(dmd_denoising_steps=(1000, 750, 500, 250), generator_update_interval=5)
    # rollout: mean exit 1.5 + exit forward 1 + context 1 = 3.5 whole forwards.
    critic_step = 3.5 * 10 + 3 * 10
    generator_step = (3.5 + 3) * 10 + 10 + 2 * 100
    assert METHOD.step_flops(cfg, forward, 2) == pytest.approx(2 * (critic_step + generator_step / 5))


# ----------------------------------------------------------------------- the two-phase rollout, tiny

LATENTS = (2, 16, 7, 4, 4)    # B, C, F, H, W: blocks of 4 (the remainder first) and 3 latent frames
KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def tiny():
    config = PRESETS["tiny-causal"]
    model = CausalWanTransformer(config, rngs=nnx.Rngs(params=jax.random.key(0)))
    student = RoleModel("student", config, nnx.graphdef(model), True)
    cfg = SelfForcingConfig(dmd_denoising_steps=(1000, 750, 500, 250), warp_denoising_step=True, flow_shift=5.0,
                            student_sample_type=SDE, context_noise=0.0)
    levels = SelfForcingLevels(cfg.flow_shift)
    rollout = make_rollout(cfg, student, rollout_steps(cfg), levels, jnp.float32)
    rng = np.random.default_rng(0)
    batch = {"latents": jnp.zeros(LATENTS), "text_embeds": jnp.asarray(rng.standard_normal((2, 8, 32)), jnp.float32)}
    weights = jnp.asarray(rng.standard_normal(LATENTS), jnp.float32)   # loss = sum(weights * x0)
    return model, student, cfg, levels, rollout, batch, weights, params_of(model)


@pytest.fixture(scope="module")
def two_phase(tiny):
    _, _, _, _, rollout, batch, weights, params = tiny

    def loss(p):
        out = rollout(p, batch, KEY)
        return jnp.sum(weights * out.x0), out.x0

    (_, x0_grad_pass), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    no_grad = jax.jit(lambda p: rollout(p, batch, KEY, grad=False).x0)(params)
    return x0_grad_pass, no_grad, grads


def naive_rollout(model, cfg, levels, params, batch, key, exits):
    """Spec §3 literally: chunk by chunk, step by step in Python (`exits`: the exit step of each chunk,
    concrete); the exit forward is the only one that sees the differentiated weights; its input and the
    cache are constants."""
    steps = jnp.asarray(rollout_steps(cfg))
    graphdef = nnx.graphdef(model)
    frozen = jax.lax.stop_gradient(params)
    batch_size, _, frames, height, width = batch["latents"].shape
    text = batch["text_embeds"]
    sizes = block_sizes(frames, cfg.chunk_size)
    noise = initial_noise(key, batch["latents"].shape)
    cache = empty_cache(model.config, batch_size, frames, (height, width), jnp.float32, rolling=False)
    outputs = []
    for c, (start, size) in enumerate(zip(chunk_starts(sizes), sizes)):
        x = noise[:, :, start:start + size]
        full = lambda t: jnp.full((batch_size, size), t, jnp.float32)
        for k in range(exits[c] + 1):
            weights = params if k == exits[c] else frozen
            velocity, _ = nnx.merge(graphdef, weights).chunk(jax.lax.stop_gradient(x), full(steps[k]), text,
                                                            jax.lax.stop_gradient(cache), start)
            x0 = levels.x0_from_velocity_frames(x, velocity, full(steps[k]))
            if k < exits[c]:
                eps = jax.random.normal(step_noise_key(key, c, k), x.shape)
                x = jax.lax.stop_gradient(levels.add_noise_frames(x0, eps, full(steps[k + 1])))
        outputs.append(x0)
        assert cfg.context_noise == 0   # (this reference writes the clean prediction at t = 0)
        _, kv = nnx.merge(graphdef, frozen).chunk(jax.lax.stop_gradient(x0), full(0.0), text, cache, start)
        cache = jax.lax.stop_gradient(write_chunk(cache, kv, start))
    return jnp.concatenate(outputs, axis=2)


def test_rollout_takes_the_remainder_first_and_draws_exits():
    assert block_sizes(LATENTS[2], 3) == (4, 3)
    exits = exit_indices(KEY, 2, 4, same_step=False, last_step_only=False)
    assert np.asarray(exits).max() > 0   # the key gives pre-exit steps to roll through


def test_phase_two_x0_equals_the_no_grad_rollout(two_phase):
    x0_grad_pass, no_grad, _ = two_phase
    scale = float(jnp.max(jnp.abs(no_grad)))
    np.testing.assert_allclose(np.asarray(x0_grad_pass), np.asarray(no_grad), rtol=0, atol=2e-6 * scale)


def test_phase_two_gradient_equals_autodiff_through_the_unrolled_rollout(tiny, two_phase):
    model, _, cfg, levels, _, batch, weights, params = tiny
    x0_grad_pass, _, grads = two_phase

    exits = [int(e) for e in exit_indices(KEY, 2, 4, same_step=cfg.same_step_across_blocks,
                                          last_step_only=cfg.last_step_only)]

    def loss(p):
        x0 = naive_rollout(model, cfg, levels, p, batch, KEY, exits)
        return jnp.sum(weights * x0), x0

    (_, x0_naive), reference = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    np.testing.assert_allclose(np.asarray(x0_grad_pass), np.asarray(x0_naive), rtol=0,
                               atol=2e-6 * float(jnp.max(jnp.abs(x0_naive))))
    flat_ref, flat = jax.tree.leaves(reference), jax.tree.leaves(grads)
    assert len(flat) == len(flat_ref) and sum(float(jnp.sum(jnp.abs(g))) for g in flat_ref) > 0
    for got, want in zip(flat, flat_ref):
        scale = max(float(jnp.max(jnp.abs(want))), 1e-12)
        assert float(jnp.max(jnp.abs(got - want))) <= 1e-5 * scale, (float(jnp.max(jnp.abs(got - want))), scale)


def test_step_flops_of_the_tiny_recipe_count_each_role_with_its_family():
    """The MFU report's count for tiny_self_forcing.yaml: the causal student's block-causal forward, the
    bidirectional teacher's and critic's own, through the method's formula (3 one-frame chunks, 3 steps,
    same exit step for all chunks: rollout = 1 + 2 whole forwards on average)."""
    from fvjax.recipe import load_recipe
    from fvjax.sharding.logical import use_rules
    from fvjax.sharding.mesh import make_mesh, select_devices
    from fvjax.sharding.rules import rules_for
    from fvjax.training.aot import step_flops
    from fvjax.training.roles import build_runtime
    from training_utils import REPO

    recipe = load_recipe(REPO / "configs/examples/tiny_self_forcing.yaml")
    mesh = make_mesh(recipe.mesh, select_devices(recipe.mesh))
    rules = rules_for(recipe.mesh)[1]
    with use_rules(mesh, rules):
        runtime = build_runtime(recipe, mesh, rules, abstract=True)
    forward = {name: model.family.forward_flops(model.config, (16, 3, 8, 8), 512)
               for name, model in runtime.models.items()}
    assert runtime.models["student"].family.name == "wan_causal" and forward["teacher"] > forward["critic"]
    rollout = 3 * forward["student"]
    critic_step = rollout + 3 * forward["critic"]
    generator_step = rollout + 3 * forward["student"] + forward["critic"] + 2 * forward["teacher"]
    assert step_flops(recipe, runtime) == pytest.approx(2 * (critic_step + generator_step / 5))


# ------------------------------------------------------------------------------------ where knobs are read

def test_knobs_older_forms_write_in_training_are_read_with_fastvideo_mains_defaults():
    """DMD2's older forms put the update interval, the guidance scale and the score-timestep range in
    training:; Self-Forcing reads them there too (never silently dropped), and without them keeps FastVideo
    main's defaults, not TrainingArgs' (interval 5)."""
    from pathlib import Path

    import yaml

    from fvjax.recipe import parse_recipe

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "configs/examples/tiny_self_forcing.yaml").read_text())
    for key in ("generator_update_interval", "real_score_guidance_scale"):
        del raw["method_config"][key]
    defaults = parse_recipe(yaml.safe_dump(raw), "sf.yaml", device_count=1).method_config
    assert (defaults.generator_update_interval, defaults.real_score_guidance_scale) == (1, 1.0)
    assert (defaults.min_timestep_ratio, defaults.max_timestep_ratio) == (0.0, 1.0)
    raw["training"].update(generator_update_interval=3, real_score_guidance_scale=2.5, min_timestep_ratio=0.02,
                           max_timestep_ratio=0.98)
    given = parse_recipe(yaml.safe_dump(raw), "sf.yaml", device_count=1).method_config
    assert (given.generator_update_interval, given.real_score_guidance_scale) == (3, 2.5)
    assert (given.min_timestep_ratio, given.max_timestep_ratio) == (0.02, 0.98)

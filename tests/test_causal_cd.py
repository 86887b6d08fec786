"""Causal consistency distillation (FastVideo's CausalConsistencyDistillationMethod, `causal_cd`): one
update's loss against the same maths written out here in plain jnp (the grid from its formula, the teacher's
CFG Euler step, the student's and the ema's x0), student, teacher and ema with different weights so a swapped
role shows; the ema role's rule (its starting weights until ema_start_step, then decay); the tiny recipe trains
in both schemas (the same steps) and resumes bit-exactly with the ema target in the checkpoint; bad recipes
are one line; 8 simulated devices (batch and sequence sharded) give the 1-device run.

Measured on this CPU (fp32): the update's loss vs the hand computation, relative error 3e-7 to 3e-6 (the grid
in float64 here, float32 in the update); the tiny run's loss 0.274 -> 0.088 over 6 steps, every step lower.
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fvjax.families.registry import get_family
from fvjax.families.wan.causal.config import PRESETS
from fvjax.keys import purpose_key, standard_normal
from fvjax.methods.causal_cd.config import CausalCDConfig
from fvjax.methods.causal_cd.update import make_update
from fvjax.methods.dmd2 import NEGATIVE_PROMPT
from fvjax.models.params import params_of
from fvjax.training.optim import OptimizerConfig, build_optimizer
from fvjax.training.roles import RoleModel, RoleState
from training_utils import (assert_resume_is_bit_exact, assert_same_metric, assert_state_close, checkpoint_arrays,
                            example_recipe, make_data, method_block, metrics_by_step, role_arrays,
                            train_in_process, train_in_subprocess, train_once, write_recipe)

CONFIG = PRESETS["tiny-causal-framewise"]
SHAPE = (2, 16, 3, 8, 8)          # [B, C, F, H, W]
STEPS = 6


# ---------------------------------------------------------------------------------------------------
# The update's maths, by hand

def _role(name: str, seed: int, trainable: bool, opt: OptimizerConfig | None = None):
    model = get_family("wan_causal").build_model(CONFIG, rngs=nnx.Rngs(params=seed), param_dtype=jnp.float32,
                                                 dtype=jnp.float32)
    tx = build_optimizer(opt) if opt else None
    return RoleModel(name, CONFIG, nnx.graphdef(model), trainable, opt, tx), params_of(model)


@pytest.fixture(scope="module")
def setup():
    cfg = CausalCDConfig(guidance_scale=3.0, discrete_cd_N=6, ema_decay=0.9, ema_start_step=3, flow_shift=5.0)
    opt = OptimizerConfig(learning_rate=1e-3, ema_decay=cfg.ema_decay, ema_start_step=cfg.ema_start_step)
    (student, sp), (teacher, tp), (ema, ep) = (_role("student", 0, True, opt), _role("teacher", 1, False),
                                               _role("ema", 2, False))
    rng = np.random.default_rng(0)
    batch = {"latents": jnp.asarray(rng.standard_normal((1,) + SHAPE, np.float32)),           # [A=1, B, ...]
             "text_embeds": jnp.asarray(rng.standard_normal((1, 2, 16, 32), np.float32))}
    frozen = {"teacher": tp, "ema": ep,
              NEGATIVE_PROMPT: {"embeds": jnp.asarray(rng.standard_normal((16, 32), np.float32)),
                                "mask": jnp.ones((16,), jnp.int32)}}
    state = RoleState(params=sp, opt_state=student.tx.init(sp), ema=jax.tree.map(jnp.copy, sp),
                      step=jnp.zeros((), jnp.int32))
    models = {"student": student, "teacher": teacher, "ema": ema}
    update = jax.jit(make_update(cfg, models, jnp.float32))
    return cfg, models, update, state, frozen, batch


@jax.jit(static_argnums=0)
def _forward(graphdef, params, x, t, text, clean):
    # jitted only to keep the test fast: the same forward, one compile for the three roles
    return nnx.merge(graphdef, params).teacher_forcing(x, t, text, clean)


def hand_loss(cfg, models, student_params, ema_params, frozen, batch, key):
    """The causal CD loss written out: FastVideo's causal_cd.py step by step."""
    n, shift = cfg.discrete_cd_N, cfg.flow_shift
    s = 1 - np.arange(n) / n                                       # linspace(1, 0, N + 1)[:-1]
    sigmas = shift * s / (1 + (shift - 1) * s)
    i = int(jax.random.randint(purpose_key(key, "cd_index"), (), 0, n - 1))
    x0, cond = batch["latents"][0], batch["text_embeds"][0]
    eps = standard_normal(purpose_key(key, "noise"), x0.shape)
    x_t = (1 - sigmas[i]) * x0 + sigmas[i] * eps
    negative = jnp.broadcast_to(frozen[NEGATIVE_PROMPT]["embeds"], cond.shape)

    def v(role, params, x, sigma, text):
        t = jnp.full((x.shape[0], x.shape[2]), 1000 * sigma, jnp.float32)
        return _forward(models[role].graphdef, params, x, t, text, x0)

    v_c, v_u = v("teacher", frozen["teacher"], x_t, sigmas[i], cond), v("teacher", frozen["teacher"], x_t, sigmas[i], negative)
    x_next = x_t - (sigmas[i] - sigmas[i + 1]) * (v_u + 3.0 * (v_c - v_u))
    x0_student = x_t - sigmas[i] * v("student", student_params, x_t, sigmas[i], cond)
    x0_ema = x_next - sigmas[i + 1] * v("ema", ema_params, x_next, sigmas[i + 1], cond)
    return float(jnp.mean((x0_student - x0_ema) ** 2)), 1000 * sigmas[i]


def test_one_update_is_the_causal_cd_loss(setup):
    cfg, models, update, state, frozen, batch = setup
    seen = set()
    for k in range(3):
        key = jax.random.key(10 + k)
        # step 0: the target is models.ema's weights; later: the student state's EMA slot
        ema_params = frozen["ema"] if k == 0 else state.ema
        want, t = hand_loss(cfg, models, state.params, ema_params, frozen, batch, key)
        new, metrics = update({"student": state}, frozen, batch, key)
        got = float(metrics["student/causal_cd_loss"])
        rel = abs(got - want) / want
        print(f"draw {k}: t {t:.2f}, loss {got:.6f}, by hand {want:.6f}, relative error {rel:.1e}")
        assert rel < 1e-5 and float(metrics["student/cd_timestep"]) == pytest.approx(t, rel=1e-6)
        seen.add(round(t, 3))
        state = new["student"]
    assert len(seen) >= 2          # the draws reach more than one grid point


def test_the_ema_role_keeps_its_start_then_decays(setup):
    cfg, models, update, state, frozen, batch = setup
    states = [state]
    for step in range(1, 4):
        states.append(update({"student": states[-1]}, frozen, batch, jax.random.key(step))[0]["student"])
    leaves = lambda tree: jax.tree.leaves(tree)
    # Steps 1 and 2 (< ema_start_step 3): models.ema's weights exactly (not the student's copy).
    for step in (1, 2):
        assert all(np.array_equal(a, b) for a, b in zip(leaves(states[step].ema), leaves(frozen["ema"])))
    # Step 3: ema <- decay ema + (1 - decay) student, with the student after its third update.
    expected = [0.9 * e + 0.1 * p for e, p in zip(leaves(frozen["ema"]), leaves(states[3].params))]
    assert all(np.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(leaves(states[3].ema), expected))
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(states[3].ema), leaves(frozen["ema"])))


# ---------------------------------------------------------------------------------------------------
# The method: configs/examples/tiny_causal_cd.yaml (1-frame blocks, 3 latent frames) and its twin

def cd_recipe(data: str, output_dir: Path, name: str = "tiny_causal_cd", **training) -> dict:
    """The tiny recipe, test-sized, with a 2-point grid (i = 0 every step: t = 1000 to the grid's second
    point): with N points the loss moves by 5x with the drawn i, at one i its trend shows in a few steps."""
    recipe = example_recipe(name, data, output_dir, STEPS, **training)
    method_block(recipe).update(discrete_cd_N=2, ema_start_step=2)
    return recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data") / "tiny", num_samples=4)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("straight")
    return train_once(root, cd_recipe(data, root / "out"))


def test_trains_and_fastvideo_schema_is_the_same_experiment(tmp_path, data, straight_run):
    rows = metrics_by_step(straight_run)
    assert sorted(rows) == list(range(1, STEPS + 1))
    losses = [rows[step]["student/causal_cd_loss"] for step in sorted(rows)]
    print("causal_cd losses:", " ".join(f"{loss:.4f}" for loss in losses))
    assert all(math.isfinite(loss) for loss in losses) and all(r["student/grad_norm"] > 0 for r in rows.values())
    assert losses[-1] < 0.6 * losses[0]            # measured: 0.273 -> 0.087 over 6 steps, every step lower
    twin = train_once(tmp_path, cd_recipe(data, tmp_path / "fv", "tiny_causal_cd_fastvideo_train"))
    assert_same_metric(straight_run, twin, "student/causal_cd_loss")


def test_resume_is_bit_exact_with_the_ema_target_checkpointed(tmp_path, data, straight_run):
    half = checkpoint_arrays(straight_run, STEPS // 2)
    ema, params = role_arrays(half, "student", "ema"), role_arrays(half, "student", "params")
    assert ema and not all(np.array_equal(e, p) for e, p in zip(ema.values(), params.values()))
    assert_resume_is_bit_exact(straight_run, cd_recipe(data, tmp_path / "resumed"), tmp_path, STEPS // 2, STEPS)


def test_eight_devices_match_one_device(tmp_path, data, straight_run):
    """Batch and sequence sharded (sp 2): the teacher, ema and student forwards and the ema slot (the step-0
    switch from models.ema's weights included) give the 1-device run."""
    eight = tmp_path / "eight"
    train_in_subprocess(write_recipe(tmp_path / "eight.yaml", cd_recipe(
        data, eight, num_gpus=8, sp_size=2, hsdp_replicate_dim=2, hsdp_shard_dim=4, train_batch_size=1)))
    m1, m8 = metrics_by_step(straight_run), metrics_by_step(eight)
    for step in range(1, STEPS + 1):
        np.testing.assert_allclose(m8[step]["student/causal_cd_loss"], m1[step]["student/causal_cd_loss"], rtol=1e-5)
    p1, p8 = checkpoint_arrays(straight_run, STEPS), checkpoint_arrays(eight, STEPS)
    assert_state_close(p1, p8, ("params", "ema"))


# ---------------------------------------------------------------------------------------------------
# Bad recipes: one line, exit 2

def _edit_n(recipe):
    recipe["method_config"]["discrete_cd_N"] = 1


def _no_teacher(recipe):
    del recipe["models"]["teacher"]


def _bidirectional_student(recipe):
    recipe["models"]["student"] = {"family": "wan", "path": "tiny", "trainable": True}


def _other_ema(recipe):
    recipe["models"]["ema"]["path"] = "tiny-causal"      # 3-frame blocks; the student has 1-frame blocks


def _ema_callback(recipe):
    recipe["training"]["ema_decay"] = 0.999


@pytest.mark.parametrize("edit,key", [
    (_edit_n, "method_config.discrete_cd_N: is 1; the consistency grid needs discrete_cd_N >= 2"),
    (_no_teacher, "models.teacher"),
    (_bidirectional_student, "models.student"),
    (_other_ema, "models.ema: has another architecture than models.student"),
    (_ema_callback, "training.ema_decay"),
], ids=["N<2", "no teacher", "bidirectional student", "other ema", "ema callback"])
def test_bad_recipes_are_one_line(tmp_path, data, capsys, edit, key):
    recipe = cd_recipe(data, tmp_path / "out")
    edit(recipe)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    print(err[-1])
    assert err[-1].startswith(f"fvjax: error: {path}: {key}"), err

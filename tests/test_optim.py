"""Optimizer, schedules, EMA and gradient accumulation against torch / diffusers as oracles."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from diffusers.optimization import get_scheduler

from fvjax.training import optim
from fvjax.errors import UserError

LR = 2e-4
TOTAL = 40


def _torch_lrs(name, steps, **kw):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = get_scheduler(name, opt, **kw)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


CASES = [
    ("constant", {}, {}),
    ("constant_with_warmup", dict(lr_warmup_steps=7), dict(num_warmup_steps=7)),
    ("linear", dict(lr_warmup_steps=5, max_train_steps=TOTAL), dict(num_warmup_steps=5, num_training_steps=TOTAL)),
    ("linear", dict(max_train_steps=TOTAL), dict(num_warmup_steps=0, num_training_steps=TOTAL)),
    ("cosine", dict(lr_warmup_steps=5, max_train_steps=TOTAL, lr_num_cycles=3),
     dict(num_warmup_steps=5, num_training_steps=TOTAL)),  # FastVideo passes no num_cycles to cosine
    ("cosine_with_restarts", dict(lr_warmup_steps=3, max_train_steps=TOTAL, lr_num_cycles=3),
     dict(num_warmup_steps=3, num_training_steps=TOTAL, num_cycles=3)),
    ("polynomial", dict(lr_warmup_steps=4, max_train_steps=TOTAL, lr_power=2.0),
     dict(num_warmup_steps=4, num_training_steps=TOTAL, power=2.0)),
    ("polynomial", dict(lr_warmup_steps=4, max_train_steps=TOTAL, lr_power=0.0),  # TrainingArgs default power
     dict(num_warmup_steps=4, num_training_steps=TOTAL, power=0.0)),
    ("piecewise_constant", dict(lr_step_rules="1:10,0.1:20,0.01:30,0.005"),
     dict(step_rules="1:10,0.1:20,0.01:30,0.005")),
]


@pytest.mark.parametrize("name,ours,theirs", CASES)
def test_schedules_match_diffusers_step_by_step(name, ours, theirs):
    cfg = optim.OptimizerConfig(learning_rate=LR, lr_scheduler=name, **ours).check()
    schedule = optim.make_schedule(cfg)
    steps = TOTAL + 6  # past the end too
    got = np.array([float(schedule(jnp.int32(c))) for c in range(steps)])
    np.testing.assert_allclose(got, _torch_lrs(name, steps, **theirs), rtol=2e-6, atol=LR * 1e-6)  # float32 vs float64 near lr 0


def test_cosine_with_min_lr_is_fastvideos_floor():
    cfg = optim.OptimizerConfig(learning_rate=LR, lr_scheduler="cosine_with_min_lr", lr_warmup_steps=5,
                                max_train_steps=TOTAL, min_lr_ratio=0.3).check()
    schedule = jax.jit(optim.make_schedule(cfg))

    def reference(step):  # FastVideo's training_utils formula (num_cycles 0.5, a max(), no rescale)
        if step < 5:
            return step / 5
        progress = (step - 5) / (TOTAL - 5)
        return max(0.3, 0.5 * (1 + math.cos(math.pi * 0.5 * 2 * progress)))

    for c in range(TOTAL + 3):
        np.testing.assert_allclose(float(schedule(c)), LR * reference(c), rtol=2e-6)


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_adamw_with_clipping_and_schedule_matches_torch(clip):
    rng = np.random.default_rng(0)
    init = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}
    grads_seq = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in init.items()} for _ in range(8)]
    cfg = optim.OptimizerConfig(learning_rate=1e-2, betas=(0.8, 0.95), weight_decay=0.1, lr_scheduler="linear",
                                lr_warmup_steps=2, max_train_steps=8, max_grad_norm=clip).check()

    tx = optim.build_optimizer(cfg)
    params = jax.tree.map(jnp.asarray, init)
    state = tx.init(params)
    for g in grads_seq:
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, updates)

    tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    opt = torch.optim.AdamW(list(tparams.values()), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1, eps=1e-8)
    sched = get_scheduler("linear", opt, num_warmup_steps=2, num_training_steps=8)
    for g in grads_seq:
        for k, p in tparams.items():
            p.grad = torch.tensor(g[k])
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(list(tparams.values()), clip)
        opt.step()
        sched.step()
    for k in init:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_config_errors_name_the_field():
    with pytest.raises(UserError, match="training.lr_scheduler"):
        optim.OptimizerConfig(learning_rate=1e-4, lr_scheduler="cosine_annealing").check()
    with pytest.raises(UserError, match="training.max_train_steps"):
        optim.OptimizerConfig(learning_rate=1e-4, lr_scheduler="cosine").check()
    with pytest.raises(UserError, match="learning_rate"):
        optim.OptimizerConfig(learning_rate=0.0).check()
    with pytest.raises(UserError, match="lr_step_rules"):
        optim.OptimizerConfig(learning_rate=1e-4, lr_scheduler="piecewise_constant").check()
    from fvjax.schema.fields import betas

    assert betas("0.9,0.95", "recipe", "training.betas") == (0.9, 0.95)
    assert betas([0.0, 0.99], "recipe", "training.betas") == (0.0, 0.99)
    with pytest.raises(UserError, match="training.betas"):
        betas("0.9", "recipe", "training.betas")


def test_ema_starts_from_the_weights_at_start_step():
    decay, start = 0.9, 3
    ema = optim.ema_init({"w": jnp.zeros(2)})
    ref = None
    update = jax.jit(optim.ema_update, static_argnums=(3, 4))
    for step in range(1, 8):
        params = {"w": jnp.full(2, float(step))}
        ema = update(ema, params, jnp.int32(step), decay, start)
        # Legacy FastVideo: the EMA is a copy of the weights at start_step, then decays.
        ref = float(step) if step <= start else decay * ref + (1 - decay) * step
        np.testing.assert_allclose(ema["w"], ref, rtol=1e-6)


def test_accumulated_gradients_equal_the_full_batch():
    def loss_fn(params, batch, key):
        pred = batch["x"] @ params["w"]
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, {"pred_mean": jnp.mean(pred)}

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"w": jax.random.normal(k1, (5, 2))}
    batch = {"x": jax.random.normal(k2, (8, 5)), "y": jax.random.normal(k3, (8, 2))}
    one = jax.tree.map(lambda x: x[None], batch)
    four = jax.tree.map(lambda x: x.reshape((4, 2) + x.shape[1:]), batch)
    (loss, aux), grads = optim.accumulate_gradients(loss_fn, params, one, jax.random.key(1))
    (loss4, aux4), grads4 = jax.jit(optim.accumulate_gradients, static_argnums=(0,))(
        loss_fn, params, four, jax.random.key(1))
    np.testing.assert_allclose(loss4, loss, rtol=1e-5)
    np.testing.assert_allclose(aux4["pred_mean"], aux["pred_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads4["w"], grads["w"], rtol=1e-5, atol=1e-6)

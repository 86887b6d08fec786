"""Causal consistency distillation (FastVideo's CausalConsistencyDistillationMethod), one pure update.

Per micro-batch, everything teacher-forced (the clean latents x0 are every forward's `clean_x` context):
- the grid: sigma_k = shift s / (1 + (shift - 1) s) for s = linspace(1, 0, N + 1)[:N], t_k = 1000 sigma_k
  (FastVideo's SelfForcingFlowMatchScheduler, sigma_min 0, extra_one_step); one index i ~ U{0..N-2} for
  the whole micro-batch, every frame at t_i;
- x_t = (1 - sigma_i) x0 + sigma_i eps;
- the frozen teacher's CFG Euler step to the next grid point: v = v_u + w (v_c - v_u) (conditional text
  and the negative prompt), x_next = x_t - (t_i - t_{i+1}) / 1000 v;
- loss = MSE(x_t - sigma_i v_student(x_t, t_i), x_next - sigma_{i+1} v_ema(x_next, t_{i+1})), float32,
  the gradient through the student's x0 only (teacher and ema are constants).
After the student's optimizer step number s (1-based): ema <- decay ema + (1 - decay) student when
s >= ema_start_step; before that the ema keeps the weights it started from (it is not a copy of the
student), as FastVideo's `optimizers_schedulers_step`.

The ema role's moving weights live in the student's train state (`RoleState.ema`, checkpointed with the
student, exported as `student_ema/`); its starting weights are models.ema's (the frozen role), read at the
first step. See __init__.py for why.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.errors import fail
from fvjax.keys import standard_normal
from fvjax.methods.causal_cd.config import CausalCDConfig
from fvjax.methods.common import apply_gradients, purpose_key
from fvjax.methods.dmd2 import NEGATIVE_PROMPT
from fvjax.methods.dfsft.update import check_teacher_forcing
from fvjax.training.optim import accumulate_gradients
from fvjax.training.roles import RoleModel


def cd_grid(cfg: CausalCDConfig) -> tuple[np.ndarray, np.ndarray]:
    """float32 (sigmas [N], timesteps [N]), noisiest first, as FastVideo's scheduler builds them."""
    s = np.linspace(1.0, 0.0, cfg.discrete_cd_N + 1, dtype=np.float32)[:-1]
    sigmas = (cfg.flow_shift * s / (1 + (cfg.flow_shift - 1) * s)).astype(np.float32)
    return sigmas, (sigmas * cfg.num_train_timesteps).astype(np.float32)


def ema_step(ema, params, step: jax.Array, cfg: CausalCDConfig):
    """The ema role after the student's optimizer update number `step` (1-based)."""
    moving = step >= cfg.ema_start_step
    return jax.tree.map(lambda e, p: jnp.where(moving, e * cfg.ema_decay + p.astype(e.dtype) * (1 - cfg.ema_decay),
                                               e), ema, params)


def check_roles(configs: Mapping[str, Any], student_lora: Any = None) -> None:
    """configs: role -> model config (MethodSpec.check_models); student_lora: the student's LoRA spec, if any."""
    if student_lora is not None:
        fail(None, "models.student.lora", "causal_cd keeps an EMA of the student's full weights; a LoRA student "
             "is not implemented")
    if configs["ema"] != configs["student"]:
        fail(None, "models.ema", "has another architecture than models.student; the ema role is an EMA of the "
             "student's weights and must start from the same model (FastVideo: the same checkpoint)")
    for name in ("student", "teacher", "ema"):
        check_teacher_forcing(configs[name], name)


def make_update(cfg: CausalCDConfig, models: dict[str, RoleModel], compute_dtype) -> Callable:
    check_roles({name: model.config for name, model in models.items()}, models["student"].lora)
    student, teacher, ema_model = models["student"], models["teacher"], models["ema"]
    sigmas, timesteps = (jnp.asarray(a) for a in cd_grid(cfg))
    n, scale = cfg.discrete_cd_N, float(cfg.num_train_timesteps)

    def flow(model, params, x, t, text, clean):
        t = jnp.full(x.shape[:1] + x.shape[2:3], t, jnp.float32)        # [B, F]: every frame at t
        out = model.module(params).teacher_forcing(x.astype(compute_dtype), t, text.astype(compute_dtype), clean)
        return out.astype(jnp.float32)

    def loss_fn(params, batch, key, ema_params, frozen):
        x0 = batch["latents"].astype(jnp.float32)
        clean = x0.astype(compute_dtype)
        i = jax.random.randint(purpose_key(key, "cd_index"), (), 0, n - 1)
        t, t_next, sigma, sigma_next = timesteps[i], timesteps[i + 1], sigmas[i], sigmas[i + 1]
        x_t = (1 - sigma) * x0 + sigma * standard_normal(purpose_key(key, "noise"), x0.shape)
        cond = batch["text_embeds"]
        neg = frozen[NEGATIVE_PROMPT]["embeds"]
        negative = jnp.broadcast_to(neg, cond.shape[:1] + neg.shape).astype(cond.dtype)
        v_cond = flow(teacher, frozen["teacher"], x_t, t, cond, clean)
        v_uncond = flow(teacher, frozen["teacher"], x_t, t, negative, clean)
        x_next = x_t - (t - t_next) / scale * (v_uncond + cfg.guidance_scale * (v_cond - v_uncond))
        target = x_next - sigma_next * flow(ema_model, ema_params, x_next, t_next, cond, clean)
        target = jax.lax.stop_gradient(target)
        x0_student = x_t - sigma * flow(student, params, x_t, t, cond, clean)
        loss = jnp.mean((x0_student - target) ** 2)
        return loss, {"student/cd_timestep": t}

    def update(states, frozen, batch, key):
        state = states["student"]
        # The ema role starts from models.ema's weights; from then on it is the student's state's EMA.
        ema = jax.lax.cond(state.step == 0, lambda: frozen["ema"], lambda: state.ema)
        fn = functools.partial(loss_fn, ema_params=ema, frozen=frozen)
        (loss, aux), grads = accumulate_gradients(fn, state.params, batch, key)
        new_state, metrics = apply_gradients(student, state.replace(ema=None), grads)   # our own EMA rule below
        new_state = new_state.replace(ema=ema_step(ema, new_state.params, new_state.step, cfg))
        metrics.update(aux)
        metrics["student/causal_cd_loss"] = loss
        return {"student": new_state}, metrics

    return update

"""Flow-matching finetuning of the student, as FastVideo's finetune method.

Per sample: u from the timestep density (weighting_scheme), idx = floor(u * 1000), t and sigma from the
FlowMatchEulerDiscreteScheduler table shifted by flow_shift; x_t = (1 - sigma) x0 + sigma eps; the
student predicts the velocity v; loss = MSE(v, eps - x0), or with pred_type x0 (precondition_outputs)
MSE(x_t - sigma v, x0); mean over all elements in fp32. CFG dropout happens in the data pipeline
(training_cfg_rate). Gradient accumulation: the batch carries a leading micro-batch axis.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from fvjax.keys import standard_normal
from fvjax.schedulers import flow_matching as fm
from fvjax.methods.common import one_role_update, purpose_key
from fvjax.methods.finetune.config import X0, FinetuneConfig
from fvjax.training.roles import RoleModel


def make_update(cfg: FinetuneConfig, models: dict[str, RoleModel], compute_dtype) -> Callable:
    student = models["student"]
    table = fm.training_table(cfg.flow_shift, cfg.num_train_timesteps)

    def loss_fn(params, batch, key):
        x0 = batch["latents"].astype(jnp.float32)
        ts = fm.sample_timesteps(purpose_key(key, "timestep"), x0.shape[0], table, cfg.weighting_scheme or "uniform",
                                 cfg.logit_mean, cfg.logit_std, cfg.mode_scale)
        noise = standard_normal(purpose_key(key, "noise"), x0.shape)
        x_t = fm.add_noise(x0, noise, ts.sigma)
        pred = student.apply(params, x_t.astype(compute_dtype), ts.timestep,
                             batch["text_embeds"].astype(compute_dtype))
        loss = fm.flow_matching_loss(pred, x0, noise, x_t, ts.sigma, precondition_outputs=cfg.pred_type == X0)
        return loss, {"student/timestep_mean": jnp.mean(ts.timestep)}

    return one_role_update(student, loss_fn, "loss")

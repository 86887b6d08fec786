"""The "regress" method: the student maps noisy latents at a fixed timestep to `target_scale` x the clean
latents, with a plain MSE. Its config slice is `RegressConfig`, written under method_config:."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fvjax.methods import MethodSpec, RoleRequirement
from fvjax.schema import fields as F
from fvjax.schema.params import METHOD as IN_METHOD_CONFIG
from fvjax.schema.params import Param, Source
from fvjax.schema.training_args import ExecutionMode


@dataclasses.dataclass(frozen=True)
class RegressConfig:
    target_scale: float = 1.0
    noise_level: float = 0.5
    timestep: float = 500.0


def _check_unit(value, where, key):
    F.check(0.0 <= value <= 1.0, where, key, f"is {value}; must be in [0, 1]")


PARAMS = (
    Param("target_scale", (Source(IN_METHOD_CONFIG, "target_scale", F.read_float),), 1.0),
    Param("noise_level", (Source(IN_METHOD_CONFIG, "noise_level", F.read_float),), 0.5, _check_unit),
    Param("timestep", (Source(IN_METHOD_CONFIG, "timestep", F.read_float),), 500.0),
)


def make_update(cfg: RegressConfig, models, compute_dtype):
    from fvjax.methods.common import apply_gradients, purpose_key
    from fvjax.training.optim import accumulate_gradients

    student = models["student"]

    def loss_fn(params, batch, key):
        x0 = batch["latents"].astype(jnp.float32)
        noisy = x0 + cfg.noise_level * jax.random.normal(purpose_key(key, "noise"), x0.shape, jnp.float32)
        t = jnp.full((x0.shape[0],), cfg.timestep, jnp.float32)
        pred = student.apply(params, noisy.astype(compute_dtype), t, batch["text_embeds"].astype(compute_dtype))
        return jnp.mean((pred.astype(jnp.float32) - cfg.target_scale * x0) ** 2), {}

    def update(states, frozen, batch, key):
        (loss, _), grads = accumulate_gradients(loss_fn, states["student"].params, batch, key)
        state, metrics = apply_gradients(student, states["student"], grads)
        return {"student": state}, {**metrics, "student/loss": loss}

    return update


METHOD = MethodSpec(
    name="regress",
    mode=ExecutionMode.FINETUNING,
    roles=(RoleRequirement("student", True, "regress trains the student"),),
    config_cls=RegressConfig,
    params=PARAMS,
    update=make_update,
)

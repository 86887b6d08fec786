"""Pieces every method's pure update shares: per-purpose keys, applying a role's gradients."""
from __future__ import annotations

import jax
import optax

from fvjax.keys import purpose_key  # noqa: F401  (methods take their keys from here)
from fvjax.training.optim import ema_update, make_schedule
from fvjax.training.roles import RoleModel, RoleState


def apply_gradients(model: RoleModel, state: RoleState, grads) -> tuple[RoleState, dict[str, jax.Array]]:
    """One optimizer update of a trainable role (clipping is inside its optax chain), then its EMA.
    Returns the new state and `<role>/grad_norm` (before clipping) and `<role>/lr` (the lr just used)."""
    grad_norm = optax.global_norm(grads)
    updates, opt_state = model.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    ema = state.ema
    if ema is not None:
        ema = ema_update(ema, params, step, model.optimizer.ema_decay, model.optimizer.ema_start_step)
    metrics = {f"{model.name}/grad_norm": grad_norm,
               f"{model.name}/lr": learning_rate(model, state.step)}
    return RoleState(params=params, opt_state=opt_state, ema=ema, step=step), metrics


def learning_rate(model: RoleModel, count: jax.Array) -> jax.Array:
    return make_schedule(model.optimizer)(count)


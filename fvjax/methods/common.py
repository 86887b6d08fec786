"""Pieces every method's pure update shares: per-purpose keys, applying a role's gradients, the update of a
method that trains one role on one loss."""
from __future__ import annotations

from typing import Callable

import jax
import optax

from fvjax.keys import purpose_key  # noqa: F401  (methods take their keys from here)
from fvjax.training.optim import accumulate_gradients, ema_update, make_schedule
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



def one_role_update(model: RoleModel, loss_fn: Callable, loss_metric: str) -> Callable:
    """The update of a method that trains one role (finetune, kd, dfsft) on `loss_fn(params, micro_batch, key)
    -> (loss, aux metrics)`: accumulated gradients, one optimizer step; the loss logged as
    `<role>/<loss_metric>`. Frozen roles (a teacher that only made data) are not read."""
    def update(states, frozen, batch, key):
        del frozen
        state = states[model.name]
        (loss, aux), grads = accumulate_gradients(loss_fn, state.params, batch, key)
        new_state, metrics = apply_gradients(model, state, grads)
        metrics.update(aux)
        metrics[f"{model.name}/{loss_metric}"] = loss
        return {model.name: new_state}, metrics

    return update

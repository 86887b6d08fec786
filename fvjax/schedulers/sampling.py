"""The ODE sampling loop of WanPipeline, over any scheduler here (one lax.scan over the steps).

`model_fn(params, x, timestep, context) -> velocity`: params any pytree (the DiT's weights: passed as a jit
argument, not closed over, so they are not baked into the program), x float32 [B, ...], timestep float32 [B]
(the scheduler's timestep for the whole batch, as WanPipeline's t.expand(B)), context any pytree (e.g. the
text embeddings). Casting x to the model's compute dtype is the model_fn's business.
With classifier-free guidance (a negative context and guidance_scale > 1, WanPipeline's rule) each step runs
the model twice and steps with  v = v_uncond + g (v_cond - v_uncond).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

ModelFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]


def guided_velocity(model_fn: ModelFn, params, x: jax.Array, timestep: jax.Array, context, negative_context,
                    guidance_scale: float) -> jax.Array:
    """WanPipeline's velocity: the conditional one, or uncond + g (cond - uncond) when guidance applies."""
    cond = model_fn(params, x, timestep, context).astype(jnp.float32)
    if negative_context is None or guidance_scale <= 1.0:
        return cond
    uncond = model_fn(params, x, timestep, negative_context).astype(jnp.float32)
    return uncond + guidance_scale * (cond - uncond)


def ode_step(model_fn: ModelFn, params, scheduler, index, x: jax.Array, state, context, negative_context,
             guidance_scale: float):
    """One step of WanPipeline's loop: the scheduler's timestep for the whole batch, the (guided) velocity,
    the scheduler step. Returns (next x, next scheduler state)."""
    timestep = jnp.broadcast_to(scheduler.timesteps[index], (x.shape[0],))
    velocity = guided_velocity(model_fn, params, x, timestep, context, negative_context, guidance_scale)
    return scheduler.step(state, index, velocity, x)


@functools.partial(jax.jit, static_argnames=("model_fn", "guidance_scale"))
def sample(model_fn: ModelFn, params, x_T: jax.Array, scheduler, context=None, negative_context=None,
           guidance_scale: float = 1.0) -> jax.Array:
    """Integrate from the noise x_T through all of `scheduler`'s steps; returns the final latents (float32).

    `scheduler` is a table pytree from `flow_match_euler` / `unipc_multistep`; the step count is its static
    shape, so one compile per (model_fn, shapes, step count, guidance_scale)."""
    x = x_T.astype(jnp.float32)

    def body(carry, index):
        x, state = carry
        return ode_step(model_fn, params, scheduler, index, x, state, context, negative_context,
                        guidance_scale), None

    (x, _), _ = jax.lax.scan(body, (x, scheduler.init_state(x)), jnp.arange(scheduler.num_steps))
    return x

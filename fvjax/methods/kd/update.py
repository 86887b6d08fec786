"""KD's student update (FastVideo main's KDCausalMethod / KDMethod single_train_step).

The batch holds the teacher's states at t_list[:-1] (`trajectory` [b, K, C, T, H, W]) and its clean endpoint
(`latents`). Per step:
- step_index block: per sample and per block of `num_frames_per_block` frames (from the first frame; the last
  block may be short) an index k ~ U{0..K-1}; each frame's input is the trajectory state k of its block, its
  timestep t_list[k] (t [b, T]); step_index batch: one k for the whole batch (t [b]);
- one student forward over the whole sequence (a causal student attends block-causally);
- x0 = x_t - sigma(t) v, sigma of the nearest entry of the pipeline-shifted 1000-step table (FastVideo's lookup);
- loss = 0.5 MSE(x0, clean endpoint) over all elements, in float32 (the clean state itself is never an input:
  FastVideo main, not the original's t = 0 context blocks).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from fvjax.methods.common import apply_gradients, purpose_key
from fvjax.methods.kd.config import BLOCK, KDConfig
from fvjax.schedulers.few_step import NoiseLevels
from fvjax.training.optim import accumulate_gradients
from fvjax.training.roles import RoleModel


def block_step_indices(key: jax.Array, batch: int, frames: int, frames_per_block: int, low: int,
                       high: int) -> jax.Array:
    """int32 [batch, frames]: one index in [low, high) per sample and block of `frames_per_block` frames, blocks
    from the first frame, the last one cut short (FastVideo's repeat_interleave(...)[:, :frames])."""
    blocks = -(-frames // frames_per_block)
    per_block = jax.random.randint(key, (batch, blocks), low, high)
    return jnp.repeat(per_block, frames_per_block, axis=1)[:, :frames]


def frame_inputs(trajectory: jax.Array, index: jax.Array) -> jax.Array:
    """[b, C, T, H, W]: frame f of sample s from trajectory[s, index[s, f], :, f]."""
    b, _, c, t, h, w = trajectory.shape
    picks = jnp.broadcast_to(index[:, None, None, :, None, None], (b, 1, c, t, h, w))
    return jnp.take_along_axis(trajectory, picks, axis=1)[:, 0]


def make_update(cfg: KDConfig, models: dict[str, RoleModel], compute_dtype) -> Callable:
    student = models["student"]
    levels = NoiseLevels(cfg.flow_shift, cfg.num_train_timesteps)
    timesteps = jnp.asarray(cfg.t_list[:-1], jnp.float32)
    steps = cfg.student_steps

    def loss_fn(params, batch, key):
        trajectory = batch["trajectory"].astype(jnp.float32)
        clean = batch["latents"].astype(jnp.float32)
        b, frames = trajectory.shape[0], trajectory.shape[3]
        if cfg.step_index == BLOCK:
            index = block_step_indices(purpose_key(key, "step_index"), b, frames, cfg.num_frames_per_block, 0, steps)
            t = timesteps[index]                                        # [b, T]: per frame
            sigma = levels.sigma(t)[:, None, :, None, None]
        else:
            k = jax.random.randint(purpose_key(key, "step_index"), (), 0, steps)
            index = jnp.full((b, frames), k)
            t = jnp.full((b,), timesteps[k])                            # [b]: the whole batch
            sigma = levels.sigma(timesteps[k])
        x_t = frame_inputs(trajectory, index)
        velocity = student.apply(params, x_t.astype(compute_dtype), t, batch["text_embeds"].astype(compute_dtype))
        x0 = x_t - sigma * velocity.astype(jnp.float32)
        loss = 0.5 * jnp.mean((x0 - clean) ** 2)
        return loss, {"student/mean_step_index": jnp.mean(index.astype(jnp.float32))}

    def update(states, frozen, batch, key):
        del frozen  # the teacher only made the trajectories
        state = states["student"]
        (loss, aux), grads = accumulate_gradients(loss_fn, state.params, batch, key)
        new_state, metrics = apply_gradients(student, state, grads)
        metrics.update(aux)
        metrics["student/kd_loss"] = loss
        return {"student": new_state}, metrics

    return update

"""KD's student update (FastVideo main's KDCausalMethod / KDMethod single_train_step).

The batch holds the teacher's states at t_list[:-1] (`trajectory` [b, K, C, T, H, W]) and its clean endpoint
(`latents`). Per step:
- step_index block: per sample and per block of `num_frames_per_block` frames (from the first frame; the last
  block may be short) an index k ~ U{0..K-1}; each frame's input is the trajectory state k of its block, its
  timestep t_list[k] (t [b, T]); step_index batch: one k for the whole batch (t [b]);
- one student forward over the whole sequence (a causal student attends block-causally);
- x0 = x_t - sigma(t) v, sigma of the nearest entry of the pipeline-shifted 1000-step table (FastVideo's lookup);
- loss = 0.5 MSE(x0, clean endpoint) over all elements, in float32 (the clean state itself is never an input:
  FastVideo main). With clean_context (the original Self-Forcing / CausVid ODE regression) the block index
  ranges over all K + 1 entries of t_list; a block at the clean endpoint gets it as input with timestep 0 and
  sigma 0 (clean context for later blocks) and its frames leave the MSE.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fvjax.methods.common import one_role_update, purpose_key
from fvjax.methods.kd.config import BLOCK, KDConfig
from fvjax.schedulers.few_step import NoiseLevels
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


class StudentInputs(NamedTuple):
    x_t: jax.Array        # float32 [b, C, T, H, W]
    timestep: jax.Array   # float32 [b, T] (per frame) or [b] (one step for the batch)
    sigma: jax.Array      # float32, broadcasting against x_t
    weight: jax.Array     # float32 [b, 1, T, 1, 1]: 1 where the frame is in the loss
    index: jax.Array      # int32 [b, T]


def student_inputs(cfg: KDConfig, levels: NoiseLevels, trajectory: jax.Array, clean: jax.Array,
                   key: jax.Array) -> StudentInputs:
    """The step index draw and each frame's input, timestep and sigma (module docstring)."""
    timesteps = jnp.asarray(cfg.t_list[:-1], jnp.float32)
    steps = cfg.student_steps
    b, frames = trajectory.shape[0], trajectory.shape[3]
    ones = jnp.ones((b, 1, frames, 1, 1), jnp.float32)
    if cfg.step_index != BLOCK:
        k = jax.random.randint(key, (), 0, steps)
        index = jnp.full((b, frames), k)
        return StudentInputs(frame_inputs(trajectory, index), jnp.full((b,), timesteps[k]),
                             levels.sigma(timesteps[k]), ones, index)
    if cfg.clean_context:   # index `steps` is the clean endpoint: timestep 0, sigma 0, not in the loss
        trajectory = jnp.concatenate([trajectory, clean[:, None]], axis=1)
        timesteps = jnp.concatenate([timesteps, jnp.zeros((1,), jnp.float32)])
    index = block_step_indices(key, b, frames, cfg.num_frames_per_block, 0, steps + int(cfg.clean_context))
    t = timesteps[index]
    sigma = jnp.where(index < steps, levels.sigma(t), 0.0)[:, None, :, None, None]
    weight = (index < steps).astype(jnp.float32)[:, None, :, None, None]
    return StudentInputs(frame_inputs(trajectory, index), t, sigma, weight, index)


def make_update(cfg: KDConfig, models: dict[str, RoleModel], compute_dtype) -> Callable:
    student = models["student"]
    levels = NoiseLevels(cfg.flow_shift, cfg.num_train_timesteps)

    def loss_fn(params, batch, key):
        trajectory = batch["trajectory"].astype(jnp.float32)
        clean = batch["latents"].astype(jnp.float32)
        inputs = student_inputs(cfg, levels, trajectory, clean, purpose_key(key, "step_index"))
        velocity = student.apply(params, inputs.x_t.astype(compute_dtype), inputs.timestep,
                                 batch["text_embeds"].astype(compute_dtype))
        x0 = inputs.x_t - inputs.sigma * velocity.astype(jnp.float32)
        if cfg.clean_context:   # the mean over the frames in the loss, as the original's masked MSE
            counted = jnp.maximum(jnp.sum(jnp.broadcast_to(inputs.weight, x0.shape)), 1.0)
            loss = 0.5 * jnp.sum(inputs.weight * (x0 - clean) ** 2) / counted
        else:
            loss = 0.5 * jnp.mean((x0 - clean) ** 2)
        return loss, {"student/mean_step_index": jnp.mean(inputs.index.astype(jnp.float32))}

    return one_role_update(student, loss_fn, "kd_loss")

"""The causal student's own chunk-by-chunk rollout (spec self_forcing.md §3), in the two phases of §7.

The video's latent frames form causal chunks (`block_sizes(F, chunk_size)`: the first absorbs the
remainder). Chunk c starts from its slice of the noise and runs the few-step list S = [s_0 > ... > s_{n-1}]
up to its exit step e_c: steps k < e_c predict x0 and re-noise it to s_{k+1} (sde: fresh noise; ode: the
noise the prediction implies); the prediction at s_{e_c} is the chunk's output. A context pass then writes
the chunk's K/V into the cache at its start (the clean output at t = 0, or re-noised to `context_noise`),
and the next chunk attends to it.

Phase 1 (no gradient, the critic's rollout is only this): a lax.scan over the chunks (a larger first chunk,
holding the remainder, runs before it), and per chunk one lax.fori_loop with a traced trip count (exit + 2:
the steps up to the exit, then the context pass) whose body is one forward in the student's chunk mode
on the cache the scan carries.
Phase 2 (the generator's gradient): one `with_context` forward over all chunks' exit inputs with each
chunk's exit timestep per frame, attending to stop_gradient(final cache). The output of a chunk depends on
the weights only through its exit forward (its input and the earlier chunks' cache entries were made
without gradient, and a chunk's cache entries never change once written), so this single pass gives the
same values and the same gradient as differentiating every exit forward inside the loop, without keeping
a cache per chunk as a backward residual.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.keys import purpose_key, standard_normal
from fvjax.methods.dmd2.rollout import Rollout
from fvjax.models.causal_blocks import block_sizes
from fvjax.methods.self_forcing.config import SDE, SelfForcingConfig
from fvjax.methods.self_forcing.schedule import SelfForcingLevels, exit_indices
from fvjax.training.roles import RoleModel

RolloutFn = Callable[..., Rollout]   # (student_params, batch, key, grad=True) -> Rollout


def chunk_starts(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(s) for s in np.cumsum((0,) + tuple(sizes))[:-1])


def step_noise_key(key: jax.Array, chunk: jax.Array, step: jax.Array) -> jax.Array:
    """The re-noising of chunk `chunk` after step `step` (sde)."""
    return jax.random.fold_in(jax.random.fold_in(purpose_key(key, "renoise"), chunk), step)


def context_noise_key(key: jax.Array, chunk: jax.Array) -> jax.Array:
    return jax.random.fold_in(purpose_key(key, "context_noise"), chunk)


def initial_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return standard_normal(purpose_key(key, "initial_noise"), shape)


def frame_timesteps(per_chunk: jax.Array, sizes: tuple[int, ...], batch: int) -> jax.Array:
    """[num_chunks] -> [B, F]: each chunk's value on each of its frames."""
    return jnp.broadcast_to(jnp.repeat(per_chunk, np.asarray(sizes), total_repeat_length=sum(sizes)),
                            (batch, sum(sizes)))


def make_rollout(cfg: SelfForcingConfig, student: RoleModel, steps: np.ndarray, levels: SelfForcingLevels,
                 compute_dtype) -> RolloutFn:
    steps = jnp.asarray(steps, jnp.float32)
    num_steps = int(steps.shape[0])

    def phase1(params, text, noise, exits, key):
        """The no-grad rollout: (exit inputs, predictions, the final cache), all constants."""
        module = student.module(jax.lax.stop_gradient(params))
        batch, _, frames, height, width = noise.shape
        sizes = block_sizes(frames, cfg.chunk_size)
        starts = chunk_starts(sizes)
        text = text.astype(compute_dtype)

        def run_chunk(cache, chunk, start, size):
            # Passes j = 0..exit are the denoising steps (j < exit re-noise their prediction to s_{j+1});
            # pass exit + 1 is the context pass, whose K/V are written. One loop body, so the chunk
            # forward is compiled once per chunk shape.
            exit_step = exits[chunk]
            full = lambda t: jnp.full((batch, size), t, jnp.float32)
            t_context = full(cfg.context_noise)

            def forward(j, carry):
                x, x0, _ = carry
                is_context = j > exit_step
                if cfg.context_noise > 0:
                    eps = standard_normal(context_noise_key(key, chunk), x0.shape)
                    context = levels.add_noise_frames(x0, eps, t_context)
                else:   # FastVideo main: the clean prediction itself at t = 0
                    context = x0
                inputs = jnp.where(is_context, context, x)
                t = jnp.where(is_context, t_context, full(steps[jnp.minimum(j, num_steps - 1)]))
                velocity, kv = module.chunk(inputs.astype(compute_dtype), t, text, cache, start)
                prediction = levels.x0_from_velocity_frames(inputs, velocity, t)
                t_next = full(steps[jnp.minimum(j + 1, num_steps - 1)])
                if cfg.student_sample_type == SDE:
                    eps = standard_normal(step_noise_key(key, chunk, j), x.shape)
                    renoised = levels.add_noise_frames(prediction, eps, t_next)
                else:
                    renoised = levels.ode_renoise_frames(x, prediction, t, t_next)
                return jnp.where(j < exit_step, renoised, x), jnp.where(is_context, x0, prediction), kv

            x = jax.lax.dynamic_slice_in_dim(noise, start, size, axis=2)
            kv = jax.eval_shape(lambda: module.chunk(x.astype(compute_dtype), full(0.0), text, cache, start)[1])
            kv = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), kv)
            x, x0, kv = jax.lax.fori_loop(0, exit_step + 2, forward, (x, jnp.zeros_like(x), kv))
            return cache.write(kv, start), (x, x0)

        # One slot per frame, never rolling: the grad pass reads every chunk's context from it.
        cache = module.empty_cache(batch, frames, (height, width), compute_dtype, rolling=False)
        inputs, x0s = [], []
        first = 0
        if len(set(sizes)) > 1:   # the first chunk holds the remainder: its own shapes, outside the scan
            cache, (x, x0) = run_chunk(cache, jnp.int32(0), jnp.int32(0), sizes[0])
            inputs.append(x), x0s.append(x0)
            first = 1
        if first < len(sizes):
            size = sizes[-1]

            def body(cache, xs):
                return run_chunk(cache, xs[0], xs[1], size)

            chunks = jnp.arange(first, len(sizes), dtype=jnp.int32)
            cache, (xs, ys) = jax.lax.scan(body, cache, (chunks, jnp.asarray(starts[first:], jnp.int32)))
            # [N, B, C, size, H, W] -> [B, C, N * size, H, W]
            join = lambda a: jnp.moveaxis(a, 0, 2).reshape(a.shape[1:3] + (-1,) + a.shape[4:])
            inputs.append(join(xs)), x0s.append(join(ys))
        exit_inputs, x0 = (jnp.concatenate(a, axis=2) for a in (inputs, x0s))
        return jax.lax.stop_gradient((exit_inputs, x0, cache))

    def gradient_frames(sizes: tuple[int, ...]) -> np.ndarray:
        """bool [F]: the frames whose prediction carries the student's gradient."""
        return np.repeat([s >= cfg.start_gradient_frame for s in chunk_starts(sizes)], sizes)

    def rollout(params, batch, key, grad: bool = True) -> Rollout:
        text = batch["text_embeds"]
        shape = batch["latents"].shape   # simulate: the dataset latents (or zeros) only give the shape
        sizes = block_sizes(shape[2], cfg.chunk_size)
        exits = exit_indices(key, len(sizes), num_steps, same_step=cfg.same_step_across_blocks,
                             last_step_only=cfg.last_step_only)
        exit_inputs, x0, cache = phase1(params, text, initial_noise(key, shape), exits, key)
        mean_exit = jnp.mean(exits.astype(jnp.float32))
        if not grad or not cfg.enable_gradient_in_rollout:   # (FastVideo: no gradient reaches the student)
            return Rollout(x0, mean_exit, exit_inputs)
        t_exit = frame_timesteps(steps[exits], sizes, shape[0])
        module = student.module(params)
        velocity = module.with_context(exit_inputs.astype(compute_dtype), t_exit, text.astype(compute_dtype),
                                       jax.lax.stop_gradient(cache))
        x0_grad = levels.x0_from_velocity_frames(exit_inputs, velocity, t_exit)
        mask = gradient_frames(sizes)[None, None, :, None, None]
        return Rollout(jnp.where(mask, x0_grad, jax.lax.stop_gradient(x0_grad)), mean_exit, exit_inputs)

    rollout.phase1 = phase1
    return rollout

"""DMD2 distillation (FastVideo's design branch, spec §3): a few-step student, a frozen teacher ("real
score") and a critic ("fake score"), as one pure update.

Each step (numbered from 1; the step is the critic's update count + 1, since the critic updates every
step), per gradient-accumulation micro-batch, all with the weights the step started from:
- on student steps (step % generator_update_interval == 0, or every step when the interval is <= 0):
  x0 = the student's rollout (gradient through the exit prediction only); a score timestep t and eps;
  x_t = add_noise(x0, eps, t); x0_fake = critic(x_t, t; cond); x0_real = the teacher's CFG x0 from the
  conditional and negative-prompt embeddings; g = nan_to_num((x0_fake - x0_real) / mean|x0 - x0_real|);
  loss = 0.5 MSE(x0, stop_gradient(x0 - g)), whose gradient with respect to x0 is g / numel;
- every step: a separate no-grad student rollout x0', its own t and eps, x_t = add_noise(x0', eps, t);
  critic loss = MSE(critic(x_t, t; cond), eps - x0').
Then the critic's optimizer steps, and on student steps the student's (then its EMA). On other steps the
student's state is returned untouched (lax.cond: one jitted function, the generator pass skipped).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fvjax.keys import standard_normal
from fvjax.methods.common import apply_gradients, learning_rate, purpose_key
from fvjax.methods.dmd2 import NEGATIVE_PROMPT
from fvjax.methods.dmd2.config import SIMULATE, DMD2Config
from fvjax.methods.dmd2.rollout import Rollout, data_latent_rollout, simulate_rollout, simulate_rollout_no_grad
from fvjax.methods.dmd2.schedule import NoiseLevels, denoising_steps, guided_x0, score_timestep
from fvjax.training.optim import accumulate_gradients
from fvjax.training.roles import RoleModel



class Losses(NamedTuple):
    generator: Callable   # (student_params, micro_batch, key, critic_params, frozen) -> (loss, aux)
    critic: Callable      # (critic_params, micro_batch, key, student_params) -> (loss, aux)


def student_updates_at(step: jax.Array, interval: int) -> jax.Array:
    """Whether the student steps at `step` (FastVideo: step % interval == 0; interval <= 0: every step)."""
    if interval <= 0:
        return jnp.asarray(True)
    return step % interval == 0


def make_losses(cfg: DMD2Config, models: dict[str, RoleModel], compute_dtype, *, levels: NoiseLevels | None = None,
                rollout: Callable | None = None) -> Losses:
    """The two losses. A method built on DMD2 (Self-Forcing) passes its own noise levels and its own student
    rollout, `rollout(student_params, batch, key, grad=True) -> Rollout`."""
    student, teacher, critic = models["student"], models["teacher"], models["critic"]
    levels = levels or NoiseLevels(cfg.table_shift, cfg.num_train_timesteps)
    steps = denoising_steps(cfg)

    def x0_of(model: RoleModel, params, x_t, t, text):
        timestep = jnp.full((x_t.shape[0],), t, jnp.float32)
        velocity = model.apply(params, x_t.astype(compute_dtype), timestep, text.astype(compute_dtype))
        return levels.x0_from_velocity(x_t, velocity, t)

    def dmd2_rollout(params, batch, key, grad: bool = True) -> Rollout:
        x0_fn = functools.partial(x0_of, student, text=batch["text_embeds"])
        if cfg.rollout_mode == SIMULATE:  # the dataset latents only give the shape
            simulate = simulate_rollout if grad else simulate_rollout_no_grad
            return simulate(x0_fn, params, batch["latents"].shape, steps, levels, key)
        return data_latent_rollout(x0_fn, params, batch["latents"], steps, levels, key)

    rollout = rollout or dmd2_rollout

    def teacher_x0(params, x_t, t, cond, negative):
        # Conditional and negative prompt through one compiled teacher (lax.map: two sequential calls).
        texts = jnp.stack([cond, negative])
        x0s = jax.lax.map(lambda text: x0_of(teacher, params, x_t, t, text), texts)
        return x0s[0], x0s[1]

    def generator(student_params, batch, key, critic_params, frozen):
        out = rollout(student_params, batch, purpose_key(key, "generator_rollout"))
        x0 = jax.lax.stop_gradient(out.x0)
        t = score_timestep(purpose_key(key, "dmd_timestep"), cfg)
        x_t = levels.add_noise(x0, standard_normal(purpose_key(key, "dmd_noise"), x0.shape), t)
        cond = batch["text_embeds"]
        negative = jnp.broadcast_to(frozen[NEGATIVE_PROMPT]["embeds"], cond.shape[:1] + frozen[NEGATIVE_PROMPT]
                                    ["embeds"].shape).astype(cond.dtype)
        x0_fake = x0_of(critic, critic_params, x_t, t, cond)
        x0_real = guided_x0(*teacher_x0(frozen["teacher"], x_t, t, cond, negative),
                            cfg.real_score_guidance_scale, cfg.real_score_guidance_form)
        x0_fake, x0_real = jax.lax.stop_gradient((x0_fake, x0_real))
        normaliser = jnp.mean(jnp.abs(x0 - x0_real))   # over the whole batch, as FastVideo
        direction = jnp.nan_to_num((x0_fake - x0_real) / normaliser)
        loss = 0.5 * jnp.mean((out.x0 - jax.lax.stop_gradient(out.x0 - direction)) ** 2)
        aux = {"student/dmd_timestep": t, "student/exit_index": out.exit_index.astype(jnp.float32),
               "student/dmd_normaliser": normaliser,
               "student/fake_real_gap": jnp.mean(jnp.abs(x0_fake - x0_real))}
        return loss, aux

    def critic_loss(critic_params, batch, key, student_params):
        x0 = jax.lax.stop_gradient(
            rollout(student_params, batch, purpose_key(key, "critic_rollout"), grad=False).x0)
        t = score_timestep(purpose_key(key, "critic_timestep"), cfg)
        noise = standard_normal(purpose_key(key, "critic_noise"), x0.shape)
        x_t = levels.add_noise(x0, noise, t)
        velocity = critic.apply(critic_params, x_t.astype(compute_dtype), jnp.full((x0.shape[0],), t, jnp.float32),
                                batch["text_embeds"].astype(compute_dtype))
        loss = jnp.mean((velocity.astype(jnp.float32) - (noise - x0)) ** 2)
        return loss, {"critic/timestep": t}

    return Losses(generator, critic_loss)


def make_update(cfg: DMD2Config, models: dict[str, RoleModel], compute_dtype, losses: Losses | None = None) -> Callable:
    losses = losses or make_losses(cfg, models, compute_dtype)
    student, critic = models["student"], models["critic"]

    def update(states, frozen, batch, key):
        step = states["critic"].step + 1
        student_state, critic_state = states["student"], states["critic"]

        def student_step(state):
            loss_fn = functools.partial(losses.generator, critic_params=critic_state.params, frozen=frozen)
            (loss, aux), grads = accumulate_gradients(loss_fn, state.params, batch, purpose_key(key, "generator"))
            new_state, metrics = apply_gradients(student, state, grads)
            return new_state, {**metrics, **aux, "student/dmd_loss": loss, "student/update": jnp.float32(1)}

        def student_rest(state):
            # No optimizer step, no EMA change; metrics of the same structure (zeros, the lr to come).
            shapes = jax.eval_shape(student_step, state)[1]
            metrics = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
            metrics["student/lr"] = learning_rate(student, state.step)
            return state, metrics

        new_student, metrics = jax.lax.cond(student_updates_at(step, cfg.generator_update_interval),
                                            student_step, student_rest, student_state)
        # The critic phase is scheduled after the student phase. It reads only the step's starting weights,
        # so this changes no value. (It does not decide the order of collectives: XLA issues them in its
        # schedule's order, the same on every device; 8 simulated CPU devices need spare host threads,
        # see tests/test_dmd2_train.py.)
        new_student, critic_state, rollout_params = jax.lax.optimization_barrier(
            (new_student, critic_state, student_state.params))
        loss_fn = functools.partial(losses.critic, student_params=rollout_params)
        (critic_loss, critic_aux), grads = accumulate_gradients(loss_fn, critic_state.params, batch,
                                                                purpose_key(key, "critic"))
        new_critic, critic_metrics = apply_gradients(critic, critic_state, grads)
        metrics = {**metrics, **critic_metrics, **critic_aux, "critic/flow_loss": critic_loss}
        return {"student": new_student, "critic": new_critic}, metrics

    return update

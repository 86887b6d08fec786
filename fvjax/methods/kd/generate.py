"""The teacher's ODE trajectories into the cache (cache.py), and KD's training data from it.

Sample i of the source dataset (training.data_path: its text embeddings, and its latents' shape) gives one
trajectory: noise from fold_in(key(seed), i) (so a sample's trajectory does not depend on which others are
made with it, or on an interruption), then the teacher's `teacher_inference_steps` Euler steps
(schedule.teacher_euler) conditioned on the prompt, through fvjax's ODE sampler step
(fvjax.schedulers.sampling.ode_step); the states before the steps at t_list[:-1] and the final state are
kept. Samples are made a data-parallel group at a time (the group's rows are independent); every process
computes, process 0 writes.

`trajectory_data` is KD's `train_data` hook: it completes the cache when the recipe has a teacher (FastVideo's
on-the-fly generation at train start), then frees the teacher and returns the cache's batches.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fvjax.data.batches import TrainData
from fvjax.errors import fail
from fvjax.keys import purpose_key, standard_normal
from fvjax.methods.api import DataContext
from fvjax.methods.kd import cache
from fvjax.methods.kd.config import KDConfig
from fvjax.methods.kd.schedule import state_indices, teacher_euler, trajectory_timesteps
from fvjax.schedulers.sampling import ode_step
from fvjax.training.roles import RoleModel, compute_dtype

TEACHER = "teacher"


def initial_noise(seed: int, index: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The trajectory's starting noise for source sample `index` (float32 `shape`)."""
    key = jax.random.fold_in(purpose_key(jax.random.key(seed), "kd_trajectory_noise"), index)
    return standard_normal(key, shape)


def model_fn_of(model: RoleModel, dtype) -> Callable:
    def model_fn(params, x, timestep, text):
        return model.apply(params, x.astype(dtype), timestep, text.astype(dtype))
    return model_fn


def make_trajectories(model_fn: Callable, config: KDConfig, seed: int, shape: tuple[int, ...]) -> Callable:
    """(params, indices [g], text [g, L, D]) -> (states [g, K, C, T, H, W], clean [g, C, T, H, W]), float32."""
    scheduler = teacher_euler(config.teacher_inference_steps, config.flow_shift, config.num_train_timesteps)
    keep, _ = state_indices(config.t_list, trajectory_timesteps(config.teacher_inference_steps, config.flow_shift,
                                                                 config.num_train_timesteps))
    slot = np.full((config.teacher_inference_steps,), -1, np.int32)
    slot[list(keep)] = np.arange(len(keep))

    def run(params, indices, text):
        x = jax.vmap(lambda i: initial_noise(seed, i, shape))(indices)
        kept = jnp.zeros((len(keep),) + x.shape, jnp.float32)

        def body(carry, index):
            x, kept = carry
            here = (jnp.arange(len(keep)) == jnp.asarray(slot)[index]).reshape((-1,) + (1,) * x.ndim)
            kept = jnp.where(here, x[None], kept)
            x, _ = ode_step(model_fn, params, scheduler, index, x, (), text, None, 1.0)
            return (x, kept), None

        (clean, kept), _ = jax.lax.scan(body, (x, kept), jnp.arange(scheduler.num_steps))
        return jnp.swapaxes(kept, 0, 1), clean

    return run


def expected_metadata(config: KDConfig, teacher: str | None, seed: int, source) -> dict:
    """As metadata.json holds it (through JSON, so it compares equal to what is read back)."""
    return json.loads(json.dumps({"format": cache.FORMAT_NAME, "version": cache.VERSION, "teacher": teacher,
            "teacher_inference_steps": config.teacher_inference_steps, "flow_shift": config.flow_shift,
            "seed": seed, "timesteps": [int(t) for t in config.t_list[:-1]], "num_samples": source.num_samples,
            "latent_shape": [int(n) for n in source.latent_shape], "text_dim": int(source.text_dim),
            "source": source.source.fingerprint}))


def _source_data(data_config) -> TrainData:
    # Every sample once, its text as given (no CFG dropout); one sample per process is a valid "batch".
    return TrainData(dataclasses.replace(data_config, training_cfg_rate=0.0, global_batch_size=jax.process_count()))


def complete_cache(config: KDConfig, ctx: DataContext, progress: bool = True) -> Path:
    """Make the cache's missing samples with the recipe's teacher (none missing: only check the metadata)."""
    recipe = ctx.recipe
    root = Path(config.teacher_path_cache).expanduser()
    teacher = recipe.roles[TEACHER].path if TEACHER in recipe.roles else None
    source = _source_data(ctx.data_config)
    expected = expected_metadata(config, teacher, recipe.training.seed, source)
    stored = cache.read_metadata(root)
    if stored is not None:
        cache.check_metadata(root, stored, expected)
    if cache.is_complete(root):
        if stored is None:
            fail(root / cache.METADATA, None, f"missing, but {root} says it is COMPLETE; delete {root} or give another "
                 f"{cache.KEY}")
        return root
    if teacher is None:
        done = source.num_samples - len(cache.missing_samples(root, source.num_samples)) if stored else 0
        fail(recipe.source, "models.teacher", f"missing; the KD trajectory cache {root} is incomplete ({done} of "
             f"{source.num_samples} samples) and only a teacher can make the rest: add models.teacher or complete it "
             "with python -m fvjax.kd_cache")
    lead = jax.process_index() == 0
    if lead and stored is None:
        cache.write_metadata(root, expected)
    _sync("kd cache metadata")
    missing = cache.missing_samples(root, source.num_samples) if stored is not None else list(range(source.num_samples))
    _generate(config, ctx, source, root, missing, progress and lead)
    _sync("kd cache samples")
    if lead:
        cache.mark_complete(root)
    _sync("kd cache complete")
    return root


def _generate(config: KDConfig, ctx: DataContext, source, root: Path, missing: list[int], progress: bool) -> None:
    if not missing:
        return
    runtime, recipe = ctx.runtime, ctx.recipe
    model = runtime.models[TEACHER]
    dtype = compute_dtype(recipe.training.mixed_precision)
    group = recipe.mesh.data_parallel
    replicated = NamedSharding(runtime.mesh, PartitionSpec())
    run = jax.jit(make_trajectories(model_fn_of(model, dtype), config, recipe.training.seed,
                                    tuple(source.latent_shape)),
                  in_shardings=(runtime.frozen_shardings[TEACHER], replicated, replicated),
                  out_shardings=(replicated, replicated))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(missing), desc="KD teacher trajectories", unit="sample", dynamic_ncols=True)
    try:
        for start in range(0, len(missing), group):
            chunk = missing[start:start + group]
            rows = chunk + chunk[-1:] * (group - len(chunk))   # a short last group repeats its last sample
            samples = [source.load_sample(i) for i in rows]
            text = np.stack([s["text_embeds"] for s in samples])
            states, clean = jax.device_get(run(runtime.frozen[TEACHER], np.asarray(rows, np.int32), text))
            if jax.process_index() == 0:
                for j, index in enumerate(chunk):
                    tokens = samples[j]["text_embeds"][:int(samples[j]["text_mask"].sum())]
                    cache.write_sample(root, index, states[j], clean[j], tokens)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def trajectory_data(config: KDConfig, ctx: DataContext):
    """KD's `train_data`: the cache completed (if the recipe has a teacher), the teacher freed, the batches."""
    root = complete_cache(config, ctx)
    runtime = ctx.runtime
    for table in (runtime.frozen, runtime.frozen_shardings, runtime.models):
        table.pop(TEACHER, None)   # only the trajectories needed it (FastVideo frees it too)
    if jax.process_index() == 0:
        print(f"fvjax: KD trajectories from {root}", file=sys.stderr)
    return cache.TrajectoryData(ctx.data_config, cache.TrajectorySource(root, tuple(config.t_list[:-1])))

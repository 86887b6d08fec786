"""The training loop: the only impure loop in fvjax.

It builds the mesh and the roles' states, jits the method's pure update once (trainable states donated,
frozen roles a separate non-donated argument), then for each step pulls a batch, calls the update with
the key fold_in(seed, step), logs, checkpoints, and reacts to preemption and non-finite losses.

Metrics stay on the devices between fetches: every `training.log_steps` steps (and before a checkpoint,
a validation, a preemption save or the end) the pending steps' metrics come to the host together, are
checked for non-finite values (any metric) and logged step by step, so the host does not wait for every
step.

Steps are numbered from 1 (FastVideo's convention: with generator_update_interval 5 the first student
update is step 5). The batch of step s is batch s - 1 of the step-indexed data pipeline, and the update's
key is fold_in(key(seed), s): a resumed run needs no saved RNG and repeats the uninterrupted run bit for
bit.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fvjax.cpu_tuning import compiler_options
from fvjax.data.batches import DataConfig, TrainData
from fvjax.families.registry import get_family
from fvjax.methods.api import TEXT_ONLY, DataContext
from fvjax.methods.registry import get_method
from fvjax.models.platform import mesh_platform
from fvjax.schema.recipe import Recipe
from fvjax.sharding.logical import use_rules
from fvjax.sharding.rules import rules_for
from fvjax.cli_setup import enable_compilation_cache
from fvjax.training.checkpoint import Checkpointer, describe_no_checkpoint, resolve_resume
from fvjax.training.metrics_log import MetricsLogger
from fvjax.training.roles import Runtime, abstract_like, add_frozen_extras, build_runtime, compute_dtype
from fvjax.training.validation import Validator

BATCH_AXES = ("replica", "fsdp")   # data-parallel mesh axes (the rules' act_batch)
EXIT_DIVERGED = 1


class TrainingDiverged(Exception):
    pass


def make_update(recipe: Recipe, runtime: Runtime) -> Callable:
    """The method's pure update(states, frozen, batch, key) -> (states, metrics), from its registry entry."""
    make = get_method(recipe.method).make_update()
    dtype = compute_dtype(recipe.training.mixed_precision)
    if all(m.lora is None for m in runtime.models.values()):
        return make(recipe.method_config, runtime.models, dtype)

    def update(states, frozen, batch, key):
        # LoRA roles read their frozen base from the update's `frozen` argument: the method is built inside
        # the trace with its roles bound to it, so the base is never a constant of the compiled step.
        models = {name: model.bind(frozen) for name, model in runtime.models.items()}
        return make(recipe.method_config, models, dtype)(states, frozen, batch, key)
    return update


def data_config(recipe: Recipe, runtime: Runtime) -> DataConfig:
    """How training.data_path is read for this recipe's method and sampled role."""
    t = recipe.training
    method = get_method(recipe.method)
    model = runtime.models[method.sampled_role].config
    # FastVideo normalises dataset latents with the VAE of the model_path pipeline (the family knows where).
    family = get_family(recipe.family)
    stats = family.latent_statistics(t.model_path or t.pretrained_model_name_or_path)
    mean, std = stats if stats is not None else (None, None)
    spatial = family.defaults.spatial_compression   # text-only data: the latents' shape from the recipe
    return DataConfig(
        data_path=t.data_path, seed=t.seed, num_latent_t=t.num_latent_t, training_cfg_rate=t.training_cfg_rate,
        global_batch_size=t.train_batch_size * recipe.mesh.data_parallel * t.grad_accum,
        text_len=family.defaults.text_len, text_dim=model.text_dim, latent_channels=model.in_channels,
        latents_mean=mean, latents_std=std, needs_latents=method.data_needs(recipe.method_config) != TEXT_ONLY,
        latent_shape=(model.in_channels, t.num_latent_t, t.num_height // spatial, t.num_width // spatial))


def _data(recipe: Recipe, runtime: Runtime) -> TrainData:
    cfg = data_config(recipe, runtime)
    method = get_method(recipe.method)
    if method.train_data is not None:   # batches of the method's own making (KD: the trajectory cache)
        return method.train_data(recipe.method_config, DataContext(recipe, runtime, cfg))
    return TrainData(cfg)


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(None, BATCH_AXES))


def _to_global(batch: dict[str, np.ndarray], grad_accum: int, data: TrainData, sharding) -> dict:
    """This process's rows [A * b, ...] -> global arrays [A, B, ...]: micro-batch axis first, the batch
    axis sharded over data parallel. Row r of micro-batch a is local row a * b + r."""
    out = {}
    for k, v in batch.items():
        local = v.reshape((grad_accum, v.shape[0] // grad_accum) + v.shape[1:])
        global_shape = (grad_accum, local.shape[1] * data.process_count) + local.shape[2:]
        out[k] = jax.make_array_from_process_local_data(sharding, local, global_shape)
    return out


class _Preemption:
    """SIGTERM (a preempted VM, a cluster's kill) -> save at the end of the current step and exit 0."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            # Every process must take the same decision: JAX's preemption sync point, not a local flag.
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def _first_nonfinite(metrics: dict[str, float]) -> str | None:
    """The first non-finite metric, losses first: any of them means the step diverged (an infinite DMD
    normaliser leaves a finite, zero loss and a zero gradient behind it)."""
    for k in sorted(metrics, key=lambda k: not k.endswith("loss")):
        if not math.isfinite(metrics[k]):
            return k
    return None


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _export_trained_weights(output_dir: str, runtime: Runtime, states: dict) -> None:
    """Write each trainable role (and its EMA) as an fvjax weights directory <output_dir>/<role>[_ema],
    the input of `python -m fvjax.convert fvjax-to-diffusers`. Every process joins the (collective)
    orbax write into <dir>.new; process 0 then swaps it in, so a previous export is replaced whole.
    A LoRA role is written as a Diffusers LoRA file instead: <output_dir>/<role>[_ema]_lora/
    pytorch_lora_weights.safetensors (its base is the role's weights, unchanged)."""
    import shutil

    from fvjax.weights.fvjax_dir import write_fvjax_dir

    lead = jax.process_index() == 0
    for name, state in states.items():
        for suffix, params in (("", state.params), ("_ema", state.ema)):
            if params is None:
                continue
            if runtime.models[name].lora is not None:
                _export_lora(os.path.join(output_dir, f"{name}{suffix}_lora"), runtime.models[name], params)
                continue
            dst = os.path.join(output_dir, f"{name}{suffix}")
            fresh = dst + ".new"
            if lead:
                shutil.rmtree(fresh, ignore_errors=True)
            _sync(f"export {fresh}")
            model = runtime.models[name]
            write_fvjax_dir(fresh, model.family, model.config, params, source=f"fvjax training, role {name}{suffix}")
            _sync(f"exported {fresh}")
            if lead:
                shutil.rmtree(dst, ignore_errors=True)
                os.rename(fresh, dst)


def _export_lora(directory: str, model, factors) -> None:
    from jax.experimental import multihost_utils

    from fvjax.lora.peft_file import write_peft_lora

    host = multihost_utils.process_allgather(factors, tiled=True) if jax.process_count() > 1 else jax.device_get(factors)
    if jax.process_index() == 0:
        lora = model.lora
        write_peft_lora(directory, list(lora.targets), host, lora.spec.rank, lora.spec.alpha)


def run_training(recipe: Recipe, mesh) -> int:
    """Train `recipe` on `mesh` (built once by the CLI from the recipe's plan: fvjax.sharding.mesh)."""
    enable_compilation_cache()   # (also for library callers: a repeated run skips most compile time)
    if mesh.devices.size < len(jax.devices()):
        print(f"fvjax: using {mesh.devices.size} of the {len(jax.devices())} devices present "
              f"(training.num_gpus = {recipe.mesh.num_devices})", file=sys.stderr)
    _, rules = rules_for(recipe.mesh)
    validator = Validator.from_recipe(recipe)   # bad validation settings fail before any model is built
    with use_rules(mesh, rules):
        runtime = build_runtime(recipe, mesh, rules)
        add_frozen_extras(recipe, runtime)   # e.g. dmd2's negative prompt for the teacher's CFG
        return _train(recipe, runtime, validator)


def _validated_params(state, t):
    """use_ema (FastVideo: the ema callback): validation renders the EMA weights (equal to the weights
    until ema_start_step)."""
    return state.ema if t.use_ema and state.ema is not None else state.params


def _validate(validator, step: int, runtime: Runtime, role: str, states: dict, t, logger) -> None:
    model = runtime.models[role]   # a LoRA role renders as its base with the factors nested in
    validator.run(step, model.whole, model.full_params(_validated_params(states[role], t), runtime.frozen), logger)


def _train(recipe: Recipe, runtime: Runtime, validator: Validator | None = None) -> int:
    t = recipe.training
    lead = jax.process_index() == 0
    data = _data(recipe, runtime)
    states = runtime.states
    ckpt = Checkpointer.for_output_dir(t.output_dir, interval_steps=t.training_state_checkpointing_steps,
                                       total_limit=t.checkpoints_total_limit)
    start_step = 0
    resume = resolve_resume(t.resume_from_checkpoint, t.output_dir)
    if t.resume_from_checkpoint and resume is None and lead:
        print(f"fvjax: {describe_no_checkpoint(t.output_dir)}", file=sys.stderr)
    iterator = data.iterator(0)
    if resume is not None:
        restored = Checkpointer(resume.root, read_only=True).restore(   # resolve_resume verified it
            resume.step, abstract_like(states, runtime.state_shardings), verify=False)
        states, start_step = restored.state, restored.step
        iterator.set_state(restored.data_state, where=f"{resume.path}: data")
        # Corrupt newer checkpoints of this run are renamed, or the steps they hold could not be saved again.
        moved = ckpt.set_aside([s for s, _ in resume.skipped]) if (
            resume.skipped and os.path.samefile(resume.root, ckpt.root)) else None
        if lead and resume.skipped:
            print(f"fvjax: {resume.fallback_note(moved)}", file=sys.stderr)
        if lead:
            print(f"fvjax: resumed from {resume.path} (step {start_step})", file=sys.stderr)

    update = jax.jit(make_update(recipe, runtime),
                     in_shardings=(runtime.state_shardings, runtime.frozen_shardings,
                                   batch_sharding(runtime.mesh), None),
                     out_shardings=(runtime.state_shardings, None), donate_argnums=(0,),
                     compiler_options=compiler_options(mesh_platform(runtime.mesh)))
    base_key = jax.random.key(t.seed)
    batches = batch_sharding(runtime.mesh)
    logger = MetricsLogger(t.output_dir, t.trackers, t.tracker_project_name, t.wandb_run_name, recipe.text,
                           entity=t.tracker_entity)
    sampled = get_method(recipe.method).sampled_role
    if validator is not None and t.validation_at_start:   # FastVideo validates before the first step too
        _validate(validator, start_step, runtime, sampled, states, t, logger)
    preemption = _Preemption()
    bar = _progress(start_step, t.max_train_steps, lead)
    step = start_step
    pending = _PendingMetrics(logger, bar)
    try:
        while step < t.max_train_steps:
            step += 1
            batch = _to_global(next(iterator), t.grad_accum, data, batches)
            began = time.perf_counter()
            states, metrics = update(states, runtime.frozen, batch, jax.random.fold_in(base_key, step))
            pending.add(step, metrics, began)
            validate = validator is not None and validator.due(step)
            save = ckpt.should_save(step) or step == t.max_train_steps
            preempted = preemption.reached(step)
            if step % t.log_steps == 0 or validate or save or preempted:
                pending.flush()   # raises TrainingDiverged before anything is saved from a diverged step
            if validate:
                _validate(validator, step, runtime, sampled, states, t, logger)
            if save:
                ckpt.save(step, states, data_state=iterator.get_state(), recipe_text=recipe.text)
            if preempted:
                ckpt.save(step, states, data_state=iterator.get_state(), recipe_text=recipe.text)
                ckpt.wait_until_finished()
                if lead:
                    print(f"fvjax: preempted; saved checkpoint {step} in {ckpt.root}; resume with "
                          "--resume-from-checkpoint latest", file=sys.stderr)
                return 0
        ckpt.wait_until_finished()
        _export_trained_weights(t.output_dir, runtime, states)
    except TrainingDiverged as err:
        bar.close()  # before the message, so the error stays the last line on the terminal
        ckpt.wait_until_finished()
        latest = ckpt.latest_sound_step()   # one that verifies
        kept = (f"the last good checkpoint is {ckpt.root}/{latest}" if latest else
                "no checkpoint verifies" if ckpt.all_steps() else "no checkpoint was saved")
        print(f"fvjax: error: {recipe.source}: training stopped at {err}; {kept} (check the recipe's scales: "
              f"learning_rate, max_grad_norm, guidance scales, flow_shift; then resume)", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    finally:
        bar.close()
        logger.close()
        preemption.restore()
        ckpt.close()
    return 0


class _PendingMetrics:
    """Device metrics of the steps since the last fetch; `flush` fetches them in one transfer, stops at the
    first non-finite loss, and logs each step (step_time_sec: wall time from the window's first update
    call to the fetch, per step; with log_steps 1 one update and its fetch, as before)."""

    def __init__(self, logger: MetricsLogger, bar: "_Bar"):
        self.logger, self.bar = logger, bar
        self.steps: list[tuple[int, Any]] = []
        self.since = 0.0

    def add(self, step: int, metrics: Any, began: float) -> None:
        if not self.steps:
            self.since = began
        self.steps.append((step, metrics))

    def flush(self) -> None:
        if not self.steps:
            return
        fetched = jax.device_get([m for _, m in self.steps])
        now = time.perf_counter()
        per_step = (now - self.since) / len(self.steps)
        steps, self.steps = self.steps, []
        for (step, _), values in zip(steps, fetched):
            metrics = {k: float(v) for k, v in values.items()}
            metrics["step_time_sec"] = per_step
            bad = _first_nonfinite(metrics)
            if bad:
                raise TrainingDiverged(f"step {step}: {bad} is {metrics[bad]}")
            self.logger.log(step, metrics)
            self.bar.show(step, metrics)


@dataclasses.dataclass
class _Bar:
    bar: Any
    last: float = dataclasses.field(default_factory=time.perf_counter)

    def show(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is None:
            return
        now = time.perf_counter()
        rate = 1.0 / max(now - self.last, 1e-9)
        self.last = now
        loss = {k.replace("/", " "): f"{v:.4g}" for k, v in metrics.items() if k.endswith("loss")}
        lr = {k.split("/")[0] + " lr": f"{v:.3g}" for k, v in metrics.items() if k.endswith("/lr")}
        self.bar.set_postfix({**loss, **lr, "steps/s": f"{rate:.2f}"}, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(start: int, total: int, lead: bool) -> _Bar:
    if not lead:
        return _Bar(None)
    from tqdm import tqdm
    return _Bar(tqdm(total=total, initial=start, desc="training", unit="step", dynamic_ncols=True))

"""Ahead-of-time compilation of a recipe's training step for devices that are not here (`--dry-run
--topology NAME`): the real runtime built abstractly (every role at full size, the recipe's mesh and
shardings, its batch and video shape), the method's jitted update lowered and compiled for a TPU
topology by libtpu's compiler on this host, and the compiled program's memory per device against the
chip's HBM.

NAME is a Cloud TPU accelerator type: v4-N and v5p-N count TensorCores (2 per chip), v5litepod-N (or
v5e-N) and v6e-N count chips. Kernels follow the target devices (fvjax/models/platform.py), so the TPU
program uses splash attention and plain matmuls even though this host is a CPU.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from fvjax.errors import fail
from fvjax.families.registry import get_family
from fvjax.methods.registry import get_method
from fvjax.schema.recipe import Recipe
from fvjax.sharding.logical import use_rules
from fvjax.sharding.mesh import AUTO, fill_distributed, make_mesh, plan_mesh
from fvjax.sharding.rules import rules_for

FLAG = "--topology"
GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Generation:
    topology: str            # libtpu's topology prefix
    counts_cores: bool       # the accelerator type's number counts TensorCores (2 per chip), else chips
    hbm_gib: float           # per chip
    peak_tflops: float       # dense bf16 per chip (scale_out.md §7)
    dims: int                # torus dimensions of the topology name


# Cloud TPU generations (scale_out.md §2).
GENERATIONS = {
    "v4": Generation("v4", True, 32, 275, 3),
    "v5p": Generation("v5p", True, 95, 459, 3),
    "v5litepod": Generation("v5e", False, 16, 197, 2),
    "v5e": Generation("v5e", False, 16, 197, 2),
    "v6e": Generation("v6e", False, 32, 918, 2),
}
GPU_NAMES = ("h100", "h200", "a100", "b200", "l4", "gpu")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    generation: Generation
    chips: int

    @property
    def topology_name(self) -> str:
        return f"{self.generation.topology}:{_torus(self.chips, self.generation.dims)}"


def _torus(chips: int, dims: int) -> str:
    """The chip grid of a slice: 2-D (v5e, v6e) 1x1, 2x2, 2x4, 4x4, 4x8, ...; 3-D (v4, v5p) 2x2x1, 2x2x2,
    2x2x4, 2x4x4, 4x4x4, ..."""
    if dims == 2:
        if chips == 1:
            return "1x1"
        a = 2 ** (int(math.log2(chips)) // 2)
        return f"{a}x{chips // a}"
    if chips == 4:
        return "2x2x1"
    shape = [2, 2, 1]
    while math.prod(shape) < chips:
        shape[shape.index(min(shape[2:] + shape[:2]))] *= 2
        shape.sort()
    return "x".join(str(s) for s in shape)


def parse_target(name: str) -> Target:
    match = re.fullmatch(r"([a-z0-9]+?)-(\d+)", name.strip().lower())
    prefix = match.group(1) if match else name.strip().lower().split("-")[0]
    if prefix in GPU_NAMES:
        fail("command line", FLAG, f"{name}: compiling for GPUs is not available without the GPUs (JAX's CUDA "
             "compiler needs the devices); run --dry-run on the GPU machine, or name a TPU type "
             f"({', '.join(_examples())})")
    if match is None or prefix not in GENERATIONS:
        fail("command line", FLAG, f"{name!r} is not a Cloud TPU accelerator type; use e.g. {', '.join(_examples())}")
    generation, count = GENERATIONS[prefix], int(match.group(2))
    chips = count // 2 if generation.counts_cores else count
    if chips < 1 or chips & (chips - 1) or (generation.dims == 3 and chips < 4):
        fail("command line", FLAG, f"{name}: no such slice ({'TensorCores' if generation.counts_cores else 'chips'} "
             f"come in powers of two{', at least 8' if generation.dims == 3 else ''})")
    return Target(name, generation, chips)


def _examples() -> list[str]:
    return ["v5p-8", "v6e-8", "v5litepod-16", "v4-8"]


def topology_devices(target: Target) -> list:
    # Only compiling here, no TPU is touched: let several processes load libtpu (its lock file would
    # otherwise stop a second compile, e.g. parallel tests), and skip the metadata lookups of a TPU VM.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # What a TPU VM's environment would say; without them libtpu logs warnings about guessing them.
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", target.name)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    try:
        from jax.experimental import topologies

        # v4 and v5p run one JAX device per chip (its two TensorCores as one "megacore"), as on a TPU VM.
        config = {"chip_config_name": "megacore"} if target.generation.counts_cores else {}
        return list(topologies.get_topology_desc(platform="tpu", topology_name=target.topology_name,
                                                 **config).devices)
    except (ImportError, RuntimeError, ValueError) as err:
        fail("command line", FLAG, f"{target.name}: libtpu cannot describe {target.topology_name} here "
             f"({' '.join(str(err).split())[:160]}); install the TPU compiler with pip install -e \".[tpu]\"")


def plan_for(recipe: Recipe, num_devices: int):
    """The recipe's mesh when it has that many devices, else its parallel sizes refilled for them."""
    if recipe.mesh.num_devices == num_devices:
        return recipe.mesh
    t = recipe.training
    sp = t.sp_size if t.sp_size != AUTO and num_devices % t.sp_size == 0 and t.sp_size <= num_devices else AUTO
    tp = t.tp_size if t.tp_size != AUTO and num_devices % t.tp_size == 0 else AUTO
    where = f"{recipe.source} (replanned for {num_devices} devices)"
    return plan_mesh(fill_distributed(num_devices, sp, tp, 1, AUTO, where=where), where=where)


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    target: Target
    devices: int
    mesh: str
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int
    compile_seconds: float
    step_flops: float | None
    pallas_kernels: int          # Pallas TPU kernel calls in the compiled program (splash attention)
    out_of_memory: str = ""      # the compiler's refusal when the temporaries alone exceed HBM

    @property
    def total_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes

    @property
    def hbm_bytes(self) -> float:
        chips = self.target.chips
        return self.target.generation.hbm_gib * GIB * chips / self.devices

    @property
    def fits(self) -> bool:
        return not self.out_of_memory and self.total_bytes <= self.hbm_bytes


def compile_step(recipe: Recipe, target: Target, devices: list | None = None) -> CompiledStep:
    """Compile the recipe's update for `target` (its libtpu topology devices unless `devices` are given)."""
    from fvjax.training.loop import batch_sharding, make_update
    from fvjax.training.roles import add_frozen_extras, build_runtime

    devices = topology_devices(target) if devices is None else devices
    plan = plan_for(recipe, len(devices))
    recipe = dataclasses.replace(recipe, mesh=plan)
    mesh = make_mesh(plan, devices, where=recipe.source)
    _, rules = rules_for(plan)
    with use_rules(mesh, rules):
        runtime = build_runtime(recipe, mesh, rules, abstract=True)
        add_frozen_extras(recipe, runtime, abstract=True)
        batch = abstract_batch(recipe, runtime, mesh)
        update = jax.jit(make_update(recipe, runtime),
                         in_shardings=(runtime.state_shardings, runtime.frozen_shardings, batch_sharding(mesh), None),
                         out_shardings=(runtime.state_shardings, None), donate_argnums=(0,))
        key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, PartitionSpec()))
        began = time.perf_counter()
        lowered = update.lower(runtime.states, runtime.frozen, batch, key)
        try:
            compiled = lowered.compile()
        except Exception as err:  # noqa: BLE001 - XLA's error types differ between versions
            if "RESOURCE_EXHAUSTED" not in str(err):
                raise
            return _out_of_memory(recipe, runtime, target, devices, plan, batch, str(err),
                                  time.perf_counter() - began)
        seconds = time.perf_counter() - began
    memory = compiled.memory_analysis()
    return CompiledStep(target, len(devices), plan.describe(), int(memory.argument_size_in_bytes),
                        int(memory.output_size_in_bytes), int(memory.temp_size_in_bytes),
                        int(memory.alias_size_in_bytes), seconds, step_flops(recipe, runtime),
                        compiled.as_text().count('custom_call_target="tpu_custom_call"'))


def _per_device_bytes(tree) -> int:
    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree))


def _out_of_memory(recipe, runtime, target, devices, plan, batch, message: str, seconds: float) -> CompiledStep:
    """libtpu refuses to compile a program whose temporaries alone exceed a device's HBM; it says how much
    they need. The arguments are the sharded states, frozen weights and batch (the outputs alias them)."""
    found = re.search(r"HLO temporaries \(([\d.]+)G\)", message)
    temps = int(float(found.group(1)) * GIB) if found else 0
    arguments = _per_device_bytes((runtime.states, runtime.frozen, batch))
    donated = _per_device_bytes(runtime.states)
    reason = " ".join(message.split())
    return CompiledStep(target, len(devices), plan.describe(), arguments, donated, temps, donated, seconds,
                        step_flops(recipe, runtime), 0, reason[reason.find("RESOURCE_EXHAUSTED"):][:300])


def _latent_shape(recipe: Recipe, channels: int, family) -> tuple[int, int, int, int]:
    t = recipe.training
    spatial = family.defaults.spatial_compression
    return (channels, t.num_latent_t, t.num_height // spatial, t.num_width // spatial)


def abstract_batch(recipe: Recipe, runtime, mesh) -> dict:
    """The update's batch as ShapeDtypeStructs: [grad_accum, global batch, ...], batch axis sharded."""
    from fvjax.training.loop import batch_sharding

    t = recipe.training
    model = runtime.models[get_method(recipe.method).sampled_role]
    family = get_family(recipe.family)
    lead = (t.grad_accum, t.train_batch_size * recipe.mesh.data_parallel)
    sharding = batch_sharding(mesh)
    text_len = family.defaults.text_len
    shapes = {"latents": (lead + _latent_shape(recipe, model.config.in_channels, family), jnp.float32),
              "text_embeds": (lead + (text_len, model.config.text_dim), jnp.float32),
              "text_mask": (lead + (text_len,), jnp.int32)}
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in shapes.items()}


def step_flops(recipe: Recipe, runtime) -> float | None:
    """Analytic model FLOPs of one step (mean over steps), from the family's forward count and the method's
    step count; None when either does not say."""
    method = get_method(recipe.method)
    family = get_family(recipe.family)
    if method.step_flops is None:
        return None
    forward = {}
    for name, model in runtime.models.items():
        # each role's own family: a causal student's recipe may hold a bidirectional teacher (KD, Self-Forcing)
        counter = model.family or family
        flops = counter.forward_flops(model.config, _latent_shape(recipe, model.config.in_channels, family),
                                      family.defaults.text_len)
        if flops is None:
            return None
        forward[name] = flops
    t = recipe.training
    return method.step_flops(recipe.method_config, forward, t.train_batch_size * recipe.mesh.data_parallel * t.grad_accum)


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def advice(recipe: Recipe, step: CompiledStep) -> list[str]:
    """Knobs that lower the per-device memory, for a step that does not fit."""
    t = recipe.training
    hints = []
    if t.enable_gradient_checkpointing_type != "full":
        hints.append("training.enable_gradient_checkpointing_type: full (rematerialise every block)")
    if t.train_batch_size > 1:
        hints.append(f"a smaller training.train_batch_size (now {t.train_batch_size}), with gradient_accumulation_steps")
    hints.append("a larger slice: parameters and optimizer state shard over every device (fsdp / sp)")
    if t.dit_precision == "fp32" and step.argument_bytes > step.temp_bytes:
        hints.append("the state dominates: fewer trainable parameters (LoRA, when it lands) or more devices")
    return hints


def render(recipe: Recipe, step: CompiledStep) -> str:
    g = step.target.generation
    verdict = "fits" if step.fits else "does not fit"
    lines = [f"  topology    {step.target.name} = libtpu {step.target.topology_name}: {step.devices} devices "
             f"({step.target.chips} chips, {g.hbm_gib:g} GiB HBM each), mesh {step.mesh}",
             f"  per device  arguments {_gib(step.argument_bytes)} GiB + outputs {_gib(step.output_bytes)} GiB + "
             f"temporaries {_gib(step.temp_bytes)} GiB - aliased (donated) {_gib(step.alias_bytes)} GiB"
             + (" (the compiler stopped: the temporaries alone exceed HBM; arguments counted from the shardings)"
                if step.out_of_memory else ""),
             f"  compile     {step.compile_seconds:.1f} s (libtpu, on this host)"]
    if step.step_flops is not None:
        per_device = step.step_flops / step.devices
        lines.append(f"  flops       {step.step_flops / 1e12:.1f} TFLOP per step (analytic, mean over steps; "
                     f"{per_device / 1e12:.1f} per device; at 50% MFU a step takes "
                     f"{per_device / (0.5 * g.peak_tflops * 1e12 * step.target.chips / step.devices):.2f} s)")
    if not step.fits:
        lines += [f"  to fit      {hint}" for hint in advice(recipe, step)]
    lines.append(f"compiled for {step.target.name}: {step.devices} devices, {_gib(step.total_bytes)} GiB of "
                 f"{_gib(step.hbm_bytes)} GiB per device ({verdict})")
    return "\n".join(lines)

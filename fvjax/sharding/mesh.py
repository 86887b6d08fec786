"""Mesh planning from the recipe's distributed fields, with or without the devices present.

Mesh axes (outermost first):
    replica  parameter replicas (HSDP replicate dim); batch is split over it
    fsdp     parameter shards that hold different batch samples; batch is split over it
    sp       sequence parallel (Ulysses): devices that share a batch and split its tokens; parameters
             are also sharded over it
    tp       tensor parallel: attention heads / MLP columns

Filling FastVideo's fields (the rule; `-1` or absent means "fill"):
    num_gpus            absent -> the number of devices present (1 when no device count is given)
    tp_size             -> 1
    sp_size             -> num_gpus (FastVideo's default: sequence parallel over every device)
    hsdp_replicate_dim  -> 1
    hsdp_shard_dim      -> num_gpus / hsdp_replicate_dim
Checks: hsdp_replicate_dim * hsdp_shard_dim == num_gpus; sp_size * tp_size divides num_gpus; and the
parameter-shard group (hsdp_shard_dim devices) and the model-parallel group (sp_size * tp_size devices)
nest: one divides the other.
Shape: with g = sp_size * tp_size and S = hsdp_shard_dim,
    g divides S:  replica = hsdp_replicate_dim, fsdp = S / g  (parameters split S ways, as FastVideo does);
    S divides g:  replica = num_gpus / g, fsdp = 1  (parameters split over the whole g-device group:
                  more ways than FastVideo, less memory per device, the same numbers).
The data-parallel degree is replica * fsdp = num_gpus / g, FastVideo's number of SP groups.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from fvjax.errors import fail

AXES = ("replica", "fsdp", "sp", "tp")
AUTO = -1


@dataclasses.dataclass(frozen=True)
class Distributed:
    num_gpus: int
    sp_size: int
    tp_size: int
    hsdp_replicate_dim: int
    hsdp_shard_dim: int


def fill_distributed(num_gpus: int, sp_size: int = AUTO, tp_size: int = AUTO, hsdp_replicate_dim: int = 1,
                     hsdp_shard_dim: int = AUTO, *, where: object = None, prefix: str = "training") -> Distributed:
    """Apply the fill rule above and check each size is positive."""
    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if num_gpus < 1:
        fail(where, key("num_gpus"), f"is {num_gpus}; must be >= 1")
    if hsdp_replicate_dim < 1:
        fail(where, key("hsdp_replicate_dim"), f"is {hsdp_replicate_dim}; must be >= 1")
    tp = 1 if tp_size == AUTO else tp_size
    sp = num_gpus if sp_size == AUTO else sp_size
    for name, value in (("tp_size", tp), ("sp_size", sp)):
        if value < 1:
            fail(where, key(name), f"is {value}; must be >= 1 (or -1 for the default)")
    if hsdp_shard_dim == AUTO:
        if num_gpus % hsdp_replicate_dim:
            fail(where, key("hsdp_replicate_dim"), f"is {hsdp_replicate_dim}, which does not divide "
                 f"num_gpus {num_gpus}")
        shard = num_gpus // hsdp_replicate_dim
    else:
        shard = hsdp_shard_dim
        if shard < 1:
            fail(where, key("hsdp_shard_dim"), f"is {shard}; must be >= 1 (or -1 for the default)")
    return Distributed(num_gpus, sp, tp, hsdp_replicate_dim, shard)


@dataclasses.dataclass(frozen=True)
class MeshPlan:
    replica: int
    fsdp: int
    sp: int
    tp: int
    hsdp_shard_dim: int           # as requested (parameters are split over at least this many devices)

    @property
    def axis_names(self) -> tuple[str, ...]:
        return AXES

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.replica, self.fsdp, self.sp, self.tp)

    @property
    def axis_sizes(self) -> dict[str, int]:
        return dict(zip(AXES, self.shape))

    @property
    def num_devices(self) -> int:
        return math.prod(self.shape)

    @property
    def data_parallel(self) -> int:
        return self.replica * self.fsdp

    @property
    def param_shards(self) -> int:
        return self.fsdp * self.sp * self.tp

    def abstract_mesh(self):
        from jax.sharding import AbstractMesh, AxisType
        return AbstractMesh(self.shape, AXES, axis_types=(AxisType.Auto,) * len(AXES))

    def describe(self) -> str:
        return " x ".join(f"{n}={s}" for n, s in zip(AXES, self.shape))


def plan_mesh(dist: Distributed, *, where: object = None, prefix: str = "training") -> MeshPlan:
    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    n, sp, tp, rep, shard = dist.num_gpus, dist.sp_size, dist.tp_size, dist.hsdp_replicate_dim, dist.hsdp_shard_dim
    if rep * shard != n:
        fail(where, key("hsdp_shard_dim"), f"hsdp_replicate_dim {rep} x hsdp_shard_dim {shard} = {rep * shard} "
             f"must equal num_gpus {n}")
    if n % sp:
        fail(where, key("sp_size"), f"is {sp}, which does not divide num_gpus {n}")
    if n % tp:
        fail(where, key("tp_size"), f"is {tp}, which does not divide num_gpus {n}")
    group = sp * tp
    if n % group:
        fail(where, key("tp_size"), f"sp_size {sp} x tp_size {tp} = {group} does not divide num_gpus {n}")
    if shard % group == 0:
        return MeshPlan(replica=rep, fsdp=shard // group, sp=sp, tp=tp, hsdp_shard_dim=shard)
    if group % shard == 0:
        return MeshPlan(replica=n // group, fsdp=1, sp=sp, tp=tp, hsdp_shard_dim=shard)
    fail(where, key("hsdp_shard_dim"), f"is {shard} while sp_size x tp_size is {group}; one must divide the "
         "other so parameter shards and sequence-parallel groups nest")


def select_devices(plan: MeshPlan) -> list:
    """The devices a run of `plan` uses: all of them, or, in a single process with spare devices (a
    1-GPU recipe on an 8-GPU box), the first `plan.num_devices`. `make_mesh` checks the count."""
    import jax

    devices = jax.devices()
    if jax.process_count() == 1 and len(devices) > plan.num_devices:
        return devices[:plan.num_devices]
    return devices


def make_mesh(plan: MeshPlan, devices: Sequence | None = None, *, where: object = None,
              key: str = "training.num_gpus"):
    """A jax.sharding.Mesh for the plan on `devices` (default: all devices); a clear error if they do
    not match the plan."""
    import jax
    from jax.sharding import AxisType, Mesh

    devices = list(jax.devices() if devices is None else devices)
    if len(devices) != plan.num_devices:
        kinds = sorted({d.platform for d in devices}) or ["no"]
        fail(where, key, f"the plan ({plan.describe()}) needs {plan.num_devices} devices but {len(devices)} "
             f"{'/'.join(kinds)} device(s) are present; set num_gpus (and the parallel sizes) for this "
             "machine, or run where the planned devices exist")
    axis_types = (AxisType.Auto,) * len(AXES)
    try:
        return jax.make_mesh(plan.shape, AXES, axis_types, devices=devices)
    except (ValueError, NotImplementedError):
        # make_mesh knows only some physical topologies; a plain row-major grid is always valid.
        return Mesh(np.asarray(devices, dtype=object).reshape(plan.shape), AXES, axis_types=axis_types)

"""Mesh planning (no devices), make_mesh on the 8 simulated CPU devices, rule presets and per-device
counts checked against real sharded arrays."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from fvjax.errors import UserError
from fvjax.families.wan.config import PRESETS
from fvjax.families.wan.transformer import abstract_params, count_params, param_logical_axes
from fvjax.sharding.mesh import AXES, fill_distributed, make_mesh, plan_mesh, select_devices
from fvjax.sharding.rules import FSDP_RULES, RULE_PRESETS, param_specs, per_device_count, rules_for


@pytest.mark.parametrize("args,shape", [
    (dict(num_gpus=1), (1, 1, 1, 1)),
    (dict(num_gpus=8), (1, 1, 8, 1)),                                   # FastVideo default: sp = num_gpus
    (dict(num_gpus=8, sp_size=1), (1, 8, 1, 1)),
    (dict(num_gpus=8, sp_size=2), (1, 4, 2, 1)),
    (dict(num_gpus=8, sp_size=1, hsdp_replicate_dim=2), (2, 4, 1, 1)),
    (dict(num_gpus=8, sp_size=8, hsdp_replicate_dim=8, hsdp_shard_dim=1), (1, 1, 8, 1)),  # S divides sp
    (dict(num_gpus=64, sp_size=4, hsdp_replicate_dim=8, hsdp_shard_dim=8), (8, 2, 4, 1)),
    (dict(num_gpus=8, sp_size=1, tp_size=2), (1, 4, 1, 2)),
    (dict(num_gpus=512, sp_size=1), (1, 512, 1, 1)),
])
def test_plan_shapes(args, shape):
    plan = plan_mesh(fill_distributed(**args))
    assert plan.shape == shape and plan.axis_names == AXES
    assert plan.num_devices == args["num_gpus"]
    assert plan.data_parallel == args["num_gpus"] // (plan.sp * plan.tp)


@pytest.mark.parametrize("args,key", [
    (dict(num_gpus=8, sp_size=3), "training.sp_size"),
    (dict(num_gpus=8, sp_size=1, tp_size=3), "training.tp_size"),
    (dict(num_gpus=8, sp_size=4, tp_size=4), "training.tp_size"),
    (dict(num_gpus=8, hsdp_replicate_dim=2, hsdp_shard_dim=2), "training.hsdp_shard_dim"),
    (dict(num_gpus=12, sp_size=6, hsdp_replicate_dim=3, hsdp_shard_dim=4), "training.hsdp_shard_dim"),
])
def test_plan_rejects(args, key):
    with pytest.raises(UserError) as info:
        plan_mesh(fill_distributed(**args), where="r.yaml")
    assert info.value.key == key and info.value.where == "r.yaml"


def test_make_mesh_on_present_devices_and_clear_error_otherwise():
    assert jax.device_count() == 8  # tests/conftest.py
    plan = plan_mesh(fill_distributed(8, sp_size=2, hsdp_replicate_dim=2))
    mesh = make_mesh(plan)
    assert dict(mesh.shape) == {"replica": 2, "fsdp": 2, "sp": 2, "tp": 1}
    small = make_mesh(plan_mesh(fill_distributed(2, sp_size=1)), jax.devices()[:2])
    assert small.devices.size == 2
    with pytest.raises(UserError, match="needs 16 devices but 8 cpu device"):
        make_mesh(plan_mesh(fill_distributed(16, sp_size=1)))
    two = plan_mesh(fill_distributed(2, sp_size=1))
    assert select_devices(two) == jax.devices()[:2] and make_mesh(two, select_devices(two)).devices.size == 2
    with pytest.raises(UserError, match="needs 2 devices but 8"):
        make_mesh(two)  # all devices given explicitly: the count must match


@pytest.mark.parametrize("args,preset", [
    (dict(num_gpus=8, sp_size=1), "fsdp"),
    (dict(num_gpus=8, sp_size=2), "fsdp+sp"),
    (dict(num_gpus=8, sp_size=1, tp_size=2), "tp"),
])
def test_per_device_counts_match_real_shards(args, preset):
    plan = plan_mesh(fill_distributed(**args))
    name, rules = rules_for(plan)
    assert name == preset and RULE_PRESETS[name] is rules
    config = PRESETS["tiny"]
    shapes, axes = abstract_params(config), param_logical_axes(config)
    specs = param_specs(axes, shapes, rules, plan)
    mesh = make_mesh(plan)
    flat_shapes = jax.tree_util.tree_leaves(shapes)
    flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    held = 0
    for leaf, spec in zip(flat_shapes, flat_specs):
        arr = jax.device_put(np.zeros(leaf.shape, np.float32), NamedSharding(mesh, spec))
        held += max(s.data.size for s in arr.addressable_shards)
    assert per_device_count(shapes, specs, plan) == held
    assert held < count_params(shapes)  # something is sharded


def test_uneven_dimensions_stay_unsplit():
    plan = plan_mesh(fill_distributed(8, sp_size=1))
    specs = param_specs({"w": ("embed", "mlp"), "b": ("embed",)},
                        {"w": jax.ShapeDtypeStruct((12, 16), np.float32), "b": jax.ShapeDtypeStruct((16,), np.float32)},
                        FSDP_RULES, plan)
    assert specs["w"] == PartitionSpec(None, None) and specs["b"] == PartitionSpec("fsdp")


def test_14b_shards_evenly_over_eight_devices():
    config = PRESETS["Wan-AI/Wan2.1-T2V-14B-Diffusers"]
    plan = plan_mesh(fill_distributed(8, sp_size=1))
    shapes = abstract_params(config)
    specs = param_specs(param_logical_axes(config), shapes, rules_for(plan)[1], plan)
    total = count_params(shapes)
    assert total == 14_288_491_584
    assert per_device_count(shapes, specs, plan) * 8 / total < 1.01  # only small vectors stay replicated

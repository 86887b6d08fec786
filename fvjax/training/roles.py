"""Roles -> train states. Each role of the recipe becomes a model definition (static) and, for
trainable roles, a `RoleState` of plain pytrees (params, optimizer state, EMA, step); frozen roles hold
params only.

Every role is built abstractly first (`nnx.eval_shape`), given shardings from the logical axis rules on
the mesh, then filled: weights are read straight into sharded arrays, random initialisation (built-in
presets) runs under `jax.jit` with those shardings, optimizer states are initialised under `jax.jit`
too. Nothing is ever materialised whole on one device unless its sharding says so.
"""
from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from fvjax.errors import fail
from fvjax.families.api import Family
from fvjax.families.registry import get_family
from fvjax.lora.build import LoraModel, lora_model
from fvjax.lora.factors import with_factors
from fvjax.methods.api import ExtrasContext
from fvjax.methods.registry import get_method
from fvjax.models.params import params_of
from fvjax.schema.recipe import Recipe
from fvjax.training.optim import OptimizerConfig, build_optimizer, ema_enabled, ema_init
from fvjax.sharding.logical import Rules
from fvjax.sharding.rules import param_specs

PRECISION_DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}
# FastVideo computes under bf16 autocast; `training.mixed_precision: "no"` (accelerate's spelling) or
# "fp32" asks for fp32 compute (CPU tests and demos, numerics checks).
FP32_COMPUTE = ("no", "fp32", "float32")
# FastVideo's enable_gradient_checkpointing_type -> fvjax remat policy of the scanned block.
REMAT_POLICIES = {None: "none", "full": "full", "ops": "dots_with_no_batch_dims", "block_skip": "full"}


@flax.struct.dataclass
class RoleState:
    """The trainable, checkpointed state of one role: arrays only."""
    params: Any
    opt_state: Any
    ema: Any                     # None when EMA is off
    step: jax.Array              # int32: optimizer updates applied to this role


@dataclasses.dataclass(frozen=True, eq=False)
class RoleModel:
    """What a method needs to run one role: the model definition and, if trainable, its optimizer."""
    name: str
    config: Any                  # the family's model config
    graphdef: Any
    trainable: bool
    optimizer: OptimizerConfig | None = None
    tx: optax.GradientTransformation | None = None
    family: Family | None = None

    # A LoRA role (fvjax/lora): its params are the factor tree, its frozen base is frozen[base_key]. Inside
    # a traced update the role is `bind`-ed to that base (a jit argument, never a captured constant).
    lora: LoraModel | None = None
    base_key: str | None = None
    base: Any = None

    def apply(self, params, hidden_states, timestep, encoder_hidden_states) -> jax.Array:
        return self.module(params)(hidden_states, timestep, encoder_hidden_states)

    def module(self, params) -> nnx.Module:
        """The role's model with `params` (a LoRA role's: its factors, over its bound base); what a method
        that calls more than the forward (a causal rollout with its caches) merges instead of `graphdef`."""
        if self.lora is not None:
            if self.base is None:
                raise AssertionError(f"LoRA role {self.name} applied before bind(frozen)")
            params = with_factors(self.base, params)
        return nnx.merge(self.graphdef, params)

    def bind(self, frozen: dict) -> "RoleModel":
        """This role reading its frozen base from `frozen` (the update's argument); others unchanged."""
        return self if self.lora is None else dataclasses.replace(self, base=frozen[self.base_key])

    @functools.cached_property
    def whole(self) -> "RoleModel":
        """The role as a plain model of full params (`full_params`): validation and export. Cached, so
        jitted samplers keyed on `whole.apply` compile once."""
        return self if self.lora is None else dataclasses.replace(self, lora=None, base_key=None, base=None)

    def full_params(self, params, frozen: dict):
        """The params `whole.apply` takes: a LoRA role's factors nested into its base (no copy)."""
        return params if self.lora is None else with_factors(frozen[self.base_key], params)


@dataclasses.dataclass
class Runtime:
    mesh: Mesh
    rules: Rules
    models: dict[str, RoleModel]
    states: dict[str, RoleState]          # trainable roles (donated, checkpointed)
    frozen: dict[str, Any]                # frozen roles' params (never donated, never saved)
    state_shardings: dict[str, Any]
    frozen_shardings: dict[str, Any]


def compute_dtype(mixed_precision: str):
    """The compute dtype training.mixed_precision asks for."""
    return jnp.float32 if mixed_precision.lower() in FP32_COMPUTE else jnp.bfloat16


def optimizer_config(recipe: Recipe, role: str) -> OptimizerConfig:
    """FastVideo's optimizer fields for a trainable role: TrainingArgs' main fields, with what the method
    overrides for this role (DMD2's critic: the fake_score_* fields), EMA for the method's EMA roles."""
    t = recipe.training
    method = get_method(recipe.method)
    cfg = OptimizerConfig(
        learning_rate=t.learning_rate, betas=t.betas, weight_decay=t.weight_decay, lr_scheduler=t.lr_scheduler,
        lr_warmup_steps=t.lr_warmup_steps, lr_num_cycles=t.lr_num_cycles, lr_power=t.lr_power,
        min_lr_ratio=t.min_lr_ratio, lr_step_rules=t.lr_step_rules or None, max_train_steps=t.max_train_steps,
        max_grad_norm=t.max_grad_norm or 0.0,
        ema_decay=t.ema_decay if role in method.ema_roles else 0.0, ema_start_step=t.ema_start_step)
    if method.optimizer_overrides is not None:
        cfg = dataclasses.replace(cfg, **method.optimizer_overrides(recipe.method_config, role))
    return cfg.check(recipe.source, "training")


def _shardings(mesh: Mesh, rules: Rules, family: Family, config, abstract: dict, plan) -> dict:
    return _shardings_of(mesh, rules, family.param_logical_axes(config), abstract, plan)


def _shardings_of(mesh: Mesh, rules: Rules, logical_axes: dict, abstract: dict, plan) -> dict:
    specs = param_specs(logical_axes, abstract, rules, plan)
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                        is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def _initial_factors(recipe: Recipe, name: str, lora: LoraModel, param_dtype, shardings: dict) -> dict:
    """Fresh factors (A random, B zero: the role starts as its base), or `lora.init_from`'s file."""
    key = _preset_key(recipe.training.seed, f"lora:{name}")
    fresh = jax.jit(lambda: lora.init(key, param_dtype), out_shardings=shardings)()
    if not lora.spec.init_from:
        return fresh
    from fvjax.lora.loading import start_factors
    from fvjax.lora.peft_file import read_peft_lora

    where, key_name = recipe.source, recipe.role_key(name, "lora.init_from")
    loaded = read_peft_lora(lora.spec.init_from, where=f"{where}: {key_name}")
    start = start_factors(loaded, list(lora.targets), lora.spec.rank, lora.spec.scale, jax.device_get(fresh),
                          where, key_name)
    return jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, lambda i, x=x: x[i]), start, shardings)


def _preset_key(seed: int, path: str) -> jax.Array:
    # The same (seed, path) gives the same weights, as two roles loading one checkpoint do in FastVideo.
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(path.encode()))


def _random_params(family: Family, config, key: jax.Array, param_dtype, shardings: dict) -> dict:
    def init():
        return params_of(family.build_model(config, rngs=nnx.Rngs(params=key), param_dtype=param_dtype,
                                            dtype=jnp.float32))
    return jax.jit(init, out_shardings=shardings)()


def _load_role_params(recipe: Recipe, name: str, family: Family, config, kind: str, param_dtype,
                      shardings: dict) -> dict:
    from fvjax.weights.loading import load_params, load_params_from_safetensors

    role = recipe.roles[name]
    key = recipe.role_key(name, "path")
    override = recipe.init_weights_override(name)
    if override:  # FastVideo's init_weights_from_safetensors replaces the role's weights entirely
        return load_params_from_safetensors(override, family, config, jnp.dtype(param_dtype), shardings)
    if kind == "preset":
        return _random_params(family, config, _preset_key(recipe.training.seed, role.path), param_dtype, shardings)
    loaded_config, params = load_params(role.path, jnp.dtype(param_dtype), shardings, where=f"{recipe.source}: {key}",
                                        family=family)
    if loaded_config != config:
        fail(recipe.source, key, "the weights' config differs from the one the plan resolved")
    return params


def build_runtime(recipe: Recipe, mesh: Mesh, rules: Rules, *, abstract: bool = False) -> Runtime:
    """Every role's model, state and shardings. `abstract`: states and frozen params are ShapeDtypeStructs
    carrying their shardings (nothing read, nothing allocated; for ahead-of-time compilation), and a
    role whose weights are not here only needs its architecture (a config.json, or a preset's name)."""
    t = recipe.training
    param_dtype = PRECISION_DTYPES[t.dit_precision]
    dtype = compute_dtype(t.mixed_precision)
    remat_policy = REMAT_POLICIES[t.enable_gradient_checkpointing_type]
    models, states, frozen, state_sh, frozen_sh = {}, {}, {}, {}, {}
    bases: dict[tuple, str] = {}   # where a role's weights come from -> the frozen entry that holds them
    # frozen roles first: a LoRA role then reads the frozen role of its weights as its base
    for name, role in sorted(recipe.roles.items(), key=lambda item: item[1].trainable):
        family = get_family(role.family)
        source = family.resolve_model(role.path, recipe.source, recipe.role_key(name, "path"))
        if not source.weights_present and not (abstract and source.config is not None):
            fail(recipe.source, recipe.role_key(name, "path"), f"weights not available: {source.detail}")
        config = family.with_arch(source.config, dict(role.arch), recipe.source, recipe.role_key(name, "arch"))
        # FastVideo rematerialises trainable roles only; a frozen role never runs a backward pass.
        model = family.abstract_model(config, param_dtype, dtype=dtype,
                                      remat_policy=remat_policy if role.trainable else "none")
        graphdef = nnx.graphdef(model)
        shardings = _shardings(mesh, rules, family, config, params_of(model), recipe.mesh)
        # Roles that start from the same weights (DMD2's teacher and LoRA student / critic from one 1.3B)
        # share one frozen copy of them when none of them trains its full weights.
        origin = (role.path, recipe.init_weights_override(name), source.kind)
        shared = bases.get(origin) if (not role.trainable or role.lora is not None) else None
        if shared is not None:
            params = frozen[shared]
        elif abstract:
            params = abstract_like(family.abstract_params(config, param_dtype), shardings)
        else:
            params = _load_role_params(recipe, name, family, config, source.kind, param_dtype, shardings)
        if not role.trainable:
            models[name] = RoleModel(name, config, graphdef, trainable=False, family=family)
            frozen[name], frozen_sh[name] = params, shardings
            bases.setdefault(origin, name)
            continue
        opt_cfg = optimizer_config(recipe, name)
        tx = build_optimizer(opt_cfg)
        if role.lora is not None:
            base_key = shared or bases.setdefault(origin, f"{name}.base")
            frozen[base_key], frozen_sh[base_key] = params, shardings
            lora = lora_model(family, config, role.lora, param_dtype, where=recipe.source,
                              key=recipe.role_key(name, "lora"), dtype=dtype, remat_policy=remat_policy)
            factor_sh = _shardings_of(mesh, rules, lora.factor_axes, lora.abstract_factors, recipe.mesh)
            factors = abstract_like(lora.abstract_factors, factor_sh) if abstract else _initial_factors(
                recipe, name, lora, param_dtype, factor_sh)
            models[name] = RoleModel(name, config, lora.graphdef, True, opt_cfg, tx, family, lora=lora,
                                     base_key=base_key)
            states[name], state_sh[name] = _init_state(factors, factor_sh, tx, ema_enabled(opt_cfg), abstract)
            continue
        models[name] = RoleModel(name, config, graphdef, True, opt_cfg, tx, family)
        states[name], state_sh[name] = _init_state(params, shardings, tx, ema_enabled(opt_cfg), abstract)
    return Runtime(mesh, rules, models, states, frozen, state_sh, frozen_sh)


def _init_state(params: dict, shardings: dict, tx: optax.GradientTransformation, with_ema: bool,
                abstract: bool = False):
    """A RoleState and its shardings; optimizer leaves shaped like params take the params' shardings,
    everything else (counts) is replicated. `abstract`: the state's ShapeDtypeStructs instead."""
    mesh = jax.tree.leaves(shardings)[0].mesh
    replicated = NamedSharding(mesh, jax.sharding.PartitionSpec())
    opt_shape = jax.eval_shape(tx.init, params)
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, opt_shape, shardings,
                                   transform_non_params=lambda _: replicated)
    sharding = RoleState(params=shardings, opt_state=opt_sh, ema=shardings if with_ema else None,
                         step=replicated)

    def init(p):
        return RoleState(params=p, opt_state=tx.init(p), ema=ema_init(p) if with_ema else None,
                         step=jnp.zeros((), jnp.int32))
    if abstract:
        return abstract_like(jax.eval_shape(init, params), sharding), sharding
    return jax.jit(init, out_shardings=sharding)(params), sharding


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying shardings, for restoring a checkpoint onto the same layout."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def add_frozen_extras(recipe: Recipe, runtime: Runtime, *, abstract: bool = False) -> None:
    """The method's `frozen_extras` (e.g. DMD2's negative prompt), prepared once and placed in
    runtime.frozen: replicated, never donated, never checkpointed. `abstract`: only their shapes."""
    method = get_method(recipe.method)
    if method.frozen_extras is None:
        return
    ctx = ExtrasContext(models=runtime.models, role_paths={n: r.path for n, r in recipe.roles.items()},
                        family=get_family(recipe.family), where=recipe.source, abstract=abstract)
    replicated = NamedSharding(runtime.mesh, jax.sharding.PartitionSpec())
    for name, arrays in method.frozen_extras(recipe.method_config, ctx).items():
        # From a callback, so every process of a multi-host run places its own identical copy.
        runtime.frozen[name] = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=replicated) if abstract
                                else jax.make_array_from_callback(v.shape, replicated, lambda i, v=v: v[i])
                                for k, v in arrays.items()}
        runtime.frozen_shardings[name] = {k: replicated for k in arrays}

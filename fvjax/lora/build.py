"""A family's model with LoRA adapters: its definition, factor shapes and logical axes, initial factors."""
from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from fvjax.lora.factors import attach_lora, factors_of, init_factors, select_like
from fvjax.lora.spec import LoraSpec
from fvjax.lora.targets import LoraTarget, find_targets
from fvjax.models.params import param_logical_axes, params_of


@dataclasses.dataclass(frozen=True, eq=False)
class LoraModel:
    spec: LoraSpec
    targets: tuple[LoraTarget, ...]
    graphdef: object            # the model with adapters: nnx.merge(graphdef, with_factors(base, factors))
    abstract_factors: dict      # ShapeDtypeStructs of the factor tree
    factor_axes: dict           # logical axis names of the factor tree

    def init(self, key: jax.Array, param_dtype) -> dict:
        return init_factors(self.targets, self.spec.rank, key, param_dtype)


def lora_model(family, config, spec: LoraSpec, param_dtype, *, where: object, key: str, **model_kwargs) -> LoraModel:
    """`spec` applied to the family's model; one-line error when its targets match nothing (at `key`)."""
    model = family.abstract_model(config, param_dtype, **model_kwargs)
    targets = find_targets(family, config, model, spec.target_modules, where, f"{key}.target_modules")
    attach_lora(model, targets, spec.rank, spec.scale)
    factors = factors_of(params_of(model))
    return LoraModel(spec, tuple(targets), nnx.graphdef(model), factors,
                     select_like(param_logical_axes(model), factors))

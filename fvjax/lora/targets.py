"""Which Dense kernels a LoRA spec adapts.

Candidates are the family's Linear tensors (`TensorKey`s with the LINEAR transform in its Diffusers key
map), so every family whose key map lists its Linears gets LoRA and the names matched are the Diffusers
module names a LoRA file uses (`blocks.0.attn1.to_q`, `blocks.0.ffn.net.0.proj`, ...). FastVideo's rule:
a module is adapted when one target is a substring of its name and no excluded word of the family
(Wan: "embedder") is; convolutions (the patch embedding) are never adapted, as FastVideo's LoRA layers
wrap Linears only.

A Dense stacked over layers (the scanned blocks) is adapted on all its layers or none: a target matching
only some layers (e.g. "blocks.0.") is refused rather than silently widened.
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.models.keymap import LINEAR, keys_by_leaf
from fvjax.models.params import param_logical_axes

WEIGHT = ".weight"


@dataclasses.dataclass(frozen=True)
class LoraTarget:
    path: tuple[str, ...]              # the Dense module's path in the param tree (its kernel is path + kernel)
    module_names: tuple[str, ...]      # Diffusers module name, one per layer (one for an unstacked Dense)
    d_in: int
    d_out: int
    layers: int | None                 # stacked: number of layers; None: a single Dense
    in_axis: str | None                # the kernel's logical axes: A takes the input axis, B the output axis
    out_axis: str | None


def excluded_words(family) -> tuple[str, ...]:
    return tuple(getattr(family, "lora_excluded_modules", ()))


def _matches(name: str, targets, excluded) -> bool:
    return any(t in name for t in targets) and not any(e in name for e in excluded)


def linear_modules(family, config, abstract_model) -> list[LoraTarget]:
    """Every Dense a LoRA could adapt, in key-map order (the family's excluded words already applied)."""
    axes = param_logical_axes(abstract_model)
    out = []
    excluded = excluded_words(family)
    for path, group in keys_by_leaf(family.tensor_keys(config)).items():
        first = group[0]
        if first.transform != LINEAR or path[-1] != "kernel":
            continue
        names = tuple(k.diffusers_key[:-len(WEIGHT)] for k in group)
        if any(e in n for n in names for e in excluded):
            continue
        kernel_axes = axes
        for p in path:
            kernel_axes = kernel_axes[p]
        d_in, d_out = first.fvjax_shape
        out.append(LoraTarget(path[:-1], names, d_in, d_out, len(group) if first.layer is not None else None,
                              kernel_axes[-2], kernel_axes[-1]))
    return out


def find_targets(family, config, abstract_model, target_modules, where: object, key: str) -> list[LoraTarget]:
    """The Dense layers `target_modules` selects; one-line errors for none, or part of a stacked Dense."""
    found = []
    excluded = excluded_words(family)
    for target in linear_modules(family, config, abstract_model):
        hits = [_matches(n, target_modules, excluded) for n in target.module_names]
        if all(hits):
            found.append(target)
        elif any(hits):
            some = [n for n, h in zip(target.module_names, hits) if h]
            fail(where, key, f"matches {some[0]} but not every layer of it ({len(some)} of {len(hits)}); fvjax "
                 "adapts a stacked layer on all blocks or none: name the module without a block index "
                 f"(e.g. {target.module_names[0].split('.', 2)[-1]})")
    if not found:
        names = [t.module_names[0] for t in linear_modules(family, config, abstract_model)]
        fail(where, key, f"{list(target_modules)} match no adaptable Linear of the {family.label} (their "
             f"Diffusers names are like {', '.join(sorted({n.split('.', 2)[-1] for n in names})[:8])})")
    return found

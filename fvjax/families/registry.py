"""The registry of model families (looked up by `recipe.family` and each role's `family`).

Built-in families are named below and imported on first use; other packages add theirs with an entry
point in the group "fvjax.families" or with `register_family(family)` (fvjax/plugins.py).
"""
from __future__ import annotations

from fvjax.errors import fail
from fvjax.families.api import Family
from fvjax.plugins import Registry

BUILTIN = {"wan": "fvjax.families.wan.family:WAN", "wan_causal": "fvjax.families.wan.causal.family:WAN_CAUSAL"}


_FAMILIES: Registry[Family] = Registry("family", "fvjax.families", BUILTIN, Family, lambda f: f.name)
register_family = _FAMILIES.register


def available_families() -> tuple[str, ...]:
    return _FAMILIES.names()


def get_family(name: str, where: object = None, key: str = "recipe.family") -> Family:
    family = _FAMILIES.find(name)
    if family is None:
        fail(where, key, f"unknown family {name!r}; available: {', '.join(available_families())}")
    return family


# A Diffusers config.json without `_class_name` is taken for this family's (older exports omit it).
DEFAULT_FAMILY = "wan"


def all_families() -> dict[str, Family]:
    return _FAMILIES.all()


def transformer_classes() -> dict[str, str]:
    """{Diffusers transformer class: what messages call it} of every known family."""
    return {f.diffusers_class_name: f.label for f in sorted(all_families().values(), key=lambda f: f.name)}


def family_for_class(class_name: str | None, where: object = None, key: str | None = "_class_name") -> Family:
    """The family whose transformer has this Diffusers `_class_name`."""
    if class_name is None:
        return get_family(DEFAULT_FAMILY)
    for family in all_families().values():
        if family.diffusers_class_name == class_name:
            return family
    fail(where, key, f"is {class_name!r}, not a {' or '.join(transformer_classes())}; point the path at one (a "
         "pipeline's transformer/ folder)")

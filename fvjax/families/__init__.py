"""Model families as plug-ins: `Family` (families/api.py) is what one provides, the registry
(families/registry.py) finds them by name. See README, "Adding a model family"."""
from fvjax.families.api import Family, ModelSource, PipelineDefaults
from fvjax.families.registry import available_families, family_for_class, get_family, register_family

__all__ = ["Family", "ModelSource", "PipelineDefaults", "available_families", "family_for_class", "get_family",
           "register_family"]

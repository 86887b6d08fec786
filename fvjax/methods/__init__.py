"""Training methods as plug-ins: a `MethodSpec` (methods/api.py) per method, found by name through the
registry (methods/registry.py). See README, "Adding a method"."""
from fvjax.methods.api import (LATENTS_AND_TEXT, TEXT_ONLY, CheckContext, ExtrasContext, MethodSpec,
                               RoleRequirement, ValidationContext)
from fvjax.methods.registry import available_methods, get_method, register_method

__all__ = ["LATENTS_AND_TEXT", "TEXT_ONLY", "CheckContext", "ExtrasContext", "MethodSpec", "RoleRequirement",
           "ValidationContext", "available_methods", "get_method", "register_method"]

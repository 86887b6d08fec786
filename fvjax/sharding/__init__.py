"""Meshes and logical-axis sharding rules."""
from fvjax.sharding.logical import constrain, logical_to_spec, use_rules

__all__ = ["constrain", "logical_to_spec", "use_rules"]

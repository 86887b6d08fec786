"""Recipes: the YAML schema, `TrainingArgs`, loading and validation (nothing else in fvjax reads YAML)."""
from fvjax.recipe.loader import load_recipe, parse_recipe
from fvjax.recipe.pipeline import PipelineConfig
from fvjax.recipe.schema import Recipe, RoleSpec
from fvjax.recipe.training_args import ExecutionMode, TrainingArgs

__all__ = ["ExecutionMode", "PipelineConfig", "Recipe", "RoleSpec", "TrainingArgs", "load_recipe", "parse_recipe"]

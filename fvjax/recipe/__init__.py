"""Recipes: reading a YAML recipe (any of FastVideo's forms) into the typed `Recipe` of fvjax/schema/,
checking it, and the dry-run plan. Nothing else in fvjax reads YAML."""
from fvjax.recipe.loader import load_recipe, parse_recipe
from fvjax.schema.pipeline_config import PipelineConfig
from fvjax.schema.recipe import Recipe, RoleSpec
from fvjax.schema.training_args import ExecutionMode, TrainingArgs

__all__ = ["ExecutionMode", "PipelineConfig", "Recipe", "RoleSpec", "TrainingArgs", "load_recipe", "parse_recipe"]

"""fvjax: recipe-driven distillation and finetuning of Wan2.1 video diffusion models in JAX/Flax."""
__version__ = "0.1.0"

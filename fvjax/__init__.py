"""fvjax: recipe-driven distillation and finetuning of Wan2.1 video diffusion models in JAX/Flax."""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `import fvjax` stays light (no jax/orbax import until weights are actually loaded).
    if name in ("load_transformer", "load_params"):
        from fvjax.weights import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'fvjax' has no attribute {name!r}")

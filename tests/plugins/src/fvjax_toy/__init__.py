"""A toy fvjax plug-in, as a lab outside fvjax would write one: a model family (family.py: a few-layer
per-token MLP with its own config and Diffusers-style key map) and a training method (method.py: plain
regression with its own config slice). Registered through the entry points of ../../dist/ (groups
"fvjax.families" and "fvjax.methods"), or by `register()` below. Nothing here is imported by fvjax."""


def register() -> None:
    """The public registry calls, for use without installed entry points."""
    from fvjax.families import register_family
    from fvjax.methods import register_method

    from fvjax_toy.family import FAMILY
    from fvjax_toy.method import METHOD

    register_family(FAMILY)
    register_method(METHOD)

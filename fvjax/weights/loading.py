"""Load transformer weights (any registered family) from any accepted path into jax arrays (optionally sharded), or a model.

`load_params` is what the training runtime uses for `models.<role>.path`; `load_transformer` is the
user-facing "give me a callable model" entry point (`fvjax.load_transformer`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fvjax.families.api import Family
from fvjax.families.registry import transformer_classes
from fvjax.models.params import nest
from fvjax.weights.diffusers_reader import DiffusersCheckpoint
from fvjax.weights.dtypes import as_dtype
from fvjax.weights.fvjax_dir import family_of, read_fvjax_config, restore_fvjax_dir, sharding_of
from fvjax.weights.paths import resolve


def _place(host: np.ndarray, sharding) -> Any:
    import jax

    # Each device receives only its own slice of the host buffer: a leaf is never whole on one device
    # unless its sharding says so.
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def family_at(path: str | Path, where: str = "path") -> Family:
    """The family of the transformer weights at `path` (fvjax manifest, or config.json's _class_name)."""
    loc = resolve(path, where=where, transformers=transformer_classes())
    if loc.kind == "fvjax":
        _, _, manifest = read_fvjax_config(loc.directory)
        return family_of(manifest, loc.directory)
    return DiffusersCheckpoint(loc.directory).family


def load_params(path: str | Path, dtype: Any = None, shardings: dict | None = None, *,
                where: str = "path", progress: bool = False, family: Family | None = None) -> tuple[Any, dict]:
    """(config, params pure dict of jax.Arrays) from a Diffusers dir / pipeline dir / cached hub id / fvjax dir.

    dtype: None keeps the stored dtype; else "float32" / "bfloat16" / a dtype. shardings: a pure dict (the
    params' structure) of jax Shardings; each leaf is then created directly with its sharding. `where` (a
    CLI flag or recipe key such as models.student.path) is named in errors. `family`: the family the
    weights must be of (None: whichever they are).
    """
    dt = as_dtype(dtype, where="dtype")
    classes = family.accepted_classes if family is not None else transformer_classes()
    loc = resolve(path, where=where, transformers=classes)
    if loc.kind == "fvjax":
        return restore_fvjax_dir(loc.directory, dt, shardings)
    return _read_checkpoint(DiffusersCheckpoint(loc.directory, family=family), dt, shardings, progress)


def load_params_from_safetensors(file: str | Path, family: Family, config, dtype: Any = None,
                                 shardings: dict | None = None, *, progress: bool = False) -> dict:
    """Params from one safetensors file of Diffusers transformer weights that must match `config`
    (FastVideo's training.init_weights_from_safetensors)."""
    ckpt = DiffusersCheckpoint(None, family=family, weights_file=file, config=config)
    return _read_checkpoint(ckpt, as_dtype(dtype, where="dtype"), shardings, progress)[1]


def _read_checkpoint(ckpt: DiffusersCheckpoint, dt, shardings: dict | None, progress: bool
                     ) -> tuple[Any, dict]:
    flat = {}
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=ckpt.nbytes, unit="B", unit_scale=True, unit_divisor=1024, desc="loading weights")
        advance = bar.update
    else:
        bar, advance = None, None
    try:
        for leaf_path, host in ckpt.leaves(dt, on_tensor=advance):
            flat[leaf_path] = _place(host, sharding_of(shardings, leaf_path))
            del host  # one host leaf at a time
    finally:
        if bar is not None:
            bar.close()
    return ckpt.config, nest(flat)


class LoadedTransformer:
    """A transformer ready to call with Diffusers' layouts; numpy or jax in, jax out.

        model = fvjax.load_transformer("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
        out = model(latents [B, 16, F, H, W], timestep [B], text [B, L, 4096])  # [B, 16, F, H, W]
    """

    def __init__(self, family: Family, config, module):
        import jax
        from flax import nnx

        self.family = family
        self.config = config
        self.module = module
        graphdef, state = nnx.split(module)
        # `apply(state, x, t, text)` is a pure jitted function: samplers take it as their model_fn with
        # `state` as the params argument, so the weights are arguments, not constants baked into programs.
        self.state = state
        self.apply = jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st)(x, t, c))

    @property
    def params(self) -> dict:
        from flax import nnx

        return nnx.state(self.module, nnx.Param).to_pure_dict()

    def __call__(self, hidden_states, timestep, encoder_hidden_states):
        import jax.numpy as jnp

        return self.apply(self.state, jnp.asarray(hidden_states), jnp.asarray(timestep),
                          jnp.asarray(encoder_hidden_states))


def load_transformer(path: str | Path, dtype: Any = None, **model_kwargs) -> LoadedTransformer:
    """A callable transformer from any accepted weights path.

    dtype: parameter and compute dtype (None: the stored dtype). model_kwargs go to the family's
    build_model (e.g. attention_backend, remat_policy).
    """
    import jax

    family = family_at(path)
    config, params = load_params(path, dtype, family=family)
    # Mixed-precision checkpoints (Diffusers keeps a few small modules fp32): the bulk's dtype decides.
    param_dtype = max(jax.tree_util.tree_leaves(params), key=lambda leaf: leaf.size).dtype
    model_kwargs.setdefault("dtype", param_dtype)
    module = family.model_from_params(config, params, param_dtype=param_dtype, **model_kwargs)
    return LoadedTransformer(family, config, module)

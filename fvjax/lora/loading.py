"""A LoRA file (one trained elsewhere, or fvjax's own export) used by fvjax: merged into full weights
(generation, conversion) or as the starting factors of a LoRA role."""
from __future__ import annotations

import numpy as np

from fvjax.errors import fail
from fvjax.lora.factors import LORA, leaf_at, replaced
from fvjax.lora.peft_file import LoadedLora
from fvjax.lora.targets import WEIGHT, LoraTarget
from fvjax.models.keymap import LINEAR
from fvjax.models.params import nest_into


def _linear_keys(family, config) -> dict:
    """Diffusers module name -> the TensorKey of its weight, for every Linear of the family."""
    return {k.diffusers_key[:-len(WEIGHT)]: k for k in family.tensor_keys(config) if k.transform == LINEAR}


def merge_lora_file(params: dict, loaded: LoadedLora, family, config, strength: float = 1.0) -> dict:
    """`params` (a full fvjax param tree) with every module of the file merged in: W += strength * scale *
    A @ B (fp32 sums, stored in W's dtype). New arrays for the changed kernels; the rest is shared."""
    keys = _linear_keys(family, config)
    unknown = sorted(set(loaded.modules) - set(keys))
    if unknown:
        fail(loaded.path, unknown[0], f"is not a Linear of the {family.label} ({family.describe(config)}); "
             "the LoRA was made for another model")
    changed: dict[tuple, np.ndarray] = {}
    for name, module in loaded.modules.items():
        key = keys[name]
        if module.a.shape[0] != key.fvjax_shape[0] or module.b.shape[1] != key.fvjax_shape[1]:
            fail(loaded.path, name, f"adapts a [{module.a.shape[0]}, {module.b.shape[1]}] layer but the model's is "
                 f"{list(key.fvjax_shape)} ({family.describe(config)})")
        if key.path not in changed:
            changed[key.path] = np.array(leaf_at(params, key.path), np.float32)
        delta = (module.a @ module.b) * np.float32(module.scale * strength)
        if key.layer is None:
            changed[key.path] += delta
        else:
            changed[key.path][key.layer] += delta
    out = params
    for path, value in changed.items():
        out = replaced(out, path, value.astype(np.asarray(leaf_at(params, path)).dtype))
    return out


def start_factors(loaded: LoadedLora, targets: list[LoraTarget], rank: int, scale: float, init: dict,
                  where: object, key: str) -> dict:
    """The factor tree a LoRA role starts from: the file's factors where it has them, with B rescaled so
    the delta is the file's under the role's alpha / rank; layers and modules the file lacks keep their
    fresh initialisation (B = 0: no delta, still trainable)."""
    by_name = {n: (t, i) for t in targets for i, n in enumerate(t.module_names)}
    extra = sorted(set(loaded.modules) - set(by_name))
    if extra:
        fail(where, key, f"the LoRA file {loaded.path} adapts {extra[0]}, which the role's lora.target_modules do "
             "not select; add it to target_modules")
    out = {}
    for target in targets:
        node = leaf_at(init, target.path + (LORA,))
        a, b = np.array(node["a"], np.float32), np.array(node["b"], np.float32)
        for i, name in enumerate(target.module_names):
            module = loaded.modules.get(name)
            if module is None:
                continue
            if module.a.shape[1] != rank:
                fail(where, key, f"the LoRA file {loaded.path} has rank {module.a.shape[1]} at {name}; the role's "
                     f"lora.rank is {rank}")
            if module.a.shape[0] != target.d_in or module.b.shape[1] != target.d_out:
                fail(where, key, f"the LoRA file {loaded.path} adapts a [{module.a.shape[0]}, {module.b.shape[1]}] "
                     f"{name}; the model's is [{target.d_in}, {target.d_out}]")
            rows = (i,) if target.layers is not None else ()
            a[rows] = module.a
            b[rows] = module.b * np.float32(module.scale / scale)
        nest_into(out, target.path + (LORA,), {"a": a.astype(np.asarray(node["a"]).dtype),
                                              "b": b.astype(np.asarray(node["b"]).dtype)})
    return out




def transformer_with_lora(transformer, path: str, strength: float = 1.0, where: str = "--lora"):
    """A `LoadedTransformer` (fvjax/weights/loading.py) with the LoRA file at `path` merged into its weights
    (generation: merged once, no per-step cost; the weights keep their dtype)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fvjax.lora.peft_file import read_peft_lora
    from fvjax.weights.loading import LoadedTransformer

    loaded = read_peft_lora(path, where=where)
    merged = merge_lora_file(jax.device_get(transformer.params), loaded, transformer.family, transformer.config,
                             strength)
    graphdef, state = nnx.split(transformer.module)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, merged))
    return LoadedTransformer(transformer.family, transformer.config, nnx.merge(graphdef, state))

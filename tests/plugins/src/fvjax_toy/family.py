"""The "toy" family: tokens are latent pixels (C features each); h = W_in x + W_text mean(text) + t/1000 w_t,
then residual GELU MLP blocks (stacked, one lax.scan), then W_out back to C channels."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from fvjax.errors import fail
from fvjax.families import Family
from fvjax.models.keymap import linear
from fvjax.models.layers import Dense, param

CLASS_NAME = "ToyTransformer"


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    in_channels: int = 16
    text_dim: int = 32
    hidden: int = 24
    num_layers: int = 2


class ToyBlock(nnx.Module):
    def __init__(self, config: ToyConfig, *, rngs, param_dtype, dtype):
        self.fc = Dense(config.hidden, config.hidden, axes=("embed", "mlp"), rngs=rngs, param_dtype=param_dtype,
                        dtype=dtype)

    def __call__(self, h):
        return h + jax.nn.gelu(self.fc(h))


class ToyModel(nnx.Module):
    def __init__(self, config: ToyConfig, *, rngs, param_dtype, dtype, remat_policy="none",
                 attention_backend="auto"):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.config = config
        self.proj_in = Dense(config.in_channels, config.hidden, axes=(None, "embed"), **kw)
        self.text_proj = Dense(config.text_dim, config.hidden, axes=(None, "embed"), **kw)
        self.time_scale = param(rngs.params(), nnx.initializers.normal(1.0), (config.hidden,), param_dtype,
                                ("embed",))

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(block_rngs):
            return ToyBlock(config, rngs=block_rngs, param_dtype=param_dtype, dtype=dtype)

        self.blocks = make_blocks(rngs)
        self.proj_out = Dense(config.hidden, config.in_channels, axes=("embed", None), **kw)

    def __call__(self, latents, timestep, text):
        b, c, f, hh, ww = latents.shape
        tokens = jnp.transpose(latents, (0, 2, 3, 4, 1)).reshape(b, f * hh * ww, c)
        cond = self.text_proj(jnp.mean(text, axis=1)) + (timestep / 1000.0)[:, None] * self.time_scale[...]
        h = self.proj_in(tokens) + cond[:, None, :]
        graphdef, stacked = nnx.split(self.blocks)
        h, _ = jax.lax.scan(lambda carry, layer: (nnx.merge(graphdef, layer)(carry), None), h, stacked)
        out = self.proj_out(h).reshape(b, f, hh, ww, c)
        return jnp.transpose(out, (0, 4, 1, 2, 3))


class ToyFamily(Family):
    name = "toy"
    display_name = "Toy"
    diffusers_class_name = CLASS_NAME
    presets = {"toy-small": ToyConfig()}

    def config_from_diffusers(self, raw, where):
        if not isinstance(raw, dict) or raw.get("_class_name") != CLASS_NAME:
            fail(where, "_class_name", f"not a {CLASS_NAME}")
        fields = {f.name for f in dataclasses.fields(ToyConfig)}
        return ToyConfig(**{k: v for k, v in raw.items() if k in fields})

    def config_to_diffusers(self, config):
        return {"_class_name": CLASS_NAME, **dataclasses.asdict(config)}

    def describe(self, config):
        return f"{config.num_layers} blocks, width {config.hidden}"

    def build_model(self, config, *, rngs, param_dtype, dtype, remat_policy="none", attention_backend="auto"):
        return ToyModel(config, rngs=rngs, param_dtype=param_dtype, dtype=dtype)

    def tensor_keys(self, config):
        keys = linear("proj_in", ("proj_in",), None, config.in_channels, config.hidden)
        keys += linear("text_proj", ("text_proj",), None, config.text_dim, config.hidden)
        from fvjax.models.keymap import TensorKey
        keys.append(TensorKey("time_scale", ("time_scale",), None, (config.hidden,), (config.hidden,)))
        for i in range(config.num_layers):
            keys += linear(f"blocks.{i}.fc", ("blocks", "fc"), i, config.hidden, config.hidden)
        keys += linear("proj_out", ("proj_out",), None, config.hidden, config.in_channels)
        return keys


FAMILY = ToyFamily()

"""What a model family gives the rest of fvjax. A family is one folder (`fvjax/families/<name>/`, or a
module of another package) holding a `Family` subclass instance and everything it needs; nothing outside
that folder imports its code: the trainer, the weight converters, the dry-run plan, validation and
generation reach it through the registry (`fvjax.families.registry.get_family`).

A family's model config is a frozen (hashable) dataclass with at least `in_channels` (latent channels
the model reads) and `text_dim` (width of the text embeddings it is conditioned on). Its model is an
`nnx.Module` called as `model(latents [B, C, F, H, W], timestep [B] or [B, F], text [B, L, text_dim])`
-> [B, C_out, F, H, W]; every parameter carries `logical_axes` metadata (`fvjax.models.layers.param`).

To write one, subclass `Family` and implement the five abstract methods (config <-> Diffusers
config.json, the model, its key map, a one-line description); override the optional hooks (VAE and text
encoder, latent statistics, flow-shift defaults, a demo pipeline) when the family has them.
"""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, Mapping

from fvjax.errors import fail


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What a role's `path` names, as far as this machine can tell without reading weights."""
    path: str
    kind: str                     # "diffusers" | "fvjax" | "preset" (random init) | "unavailable"
    config: Any | None            # the family's model config, None if it cannot be known
    weights_present: bool         # False: a real run cannot start (missing input)
    detail: str                   # where it was found / why it is missing


@dataclasses.dataclass(frozen=True)
class PipelineDefaults:
    """What a family's pipelines assume unless told (generation, validation, the AOT batch)."""
    flow_shift: float = 3.0              # the ODE samplers' shift when the pipeline does not say
    few_step_flow_shift: float = 8.0     # the DMD few-step sampler's shift
    negative_prompt: str = ""
    temporal_compression: int = 4        # video frames per latent frame (after the first)
    spatial_compression: int = 8         # pixels per latent pixel
    text_len: int = 512                  # text tokens the model is conditioned on


class Family(abc.ABC):
    name: str = ""                        # recipe.family / models.<role>.family
    display_name: str = ""                # for messages ("Wan")
    diffusers_class_name: str = ""        # the transformer's config.json _class_name
    model_label: str = ""                 # what messages call its transformer (default: the class name)
    presets: Mapping[str, Any] = {}       # preset name (no slash) -> config, random initialisation
    defaults: PipelineDefaults = PipelineDefaults()
    # FastVideo model classes (`models.<role>._target_` in its current schema) this family trains,
    # package re-exports included.
    fastvideo_targets: tuple[str, ...] = ()
    # A variant (e.g. the causal Wan of "wan") has its base family's parameters: its roles may sit in the
    # base family's recipes and either may start from the other's weights.
    variant_of: str = ""

    @property
    def kin(self) -> str:
        """The base family's name (this family's own when it is no variant)."""
        return self.variant_of or self.name

    @property
    def accepted_classes(self) -> dict[str, str]:
        """{Diffusers transformer class: label} whose weights this family loads (default: its own)."""
        return {self.diffusers_class_name: self.label}

    def with_arch(self, config: Any, arch: Mapping[str, Any], where: object, key: str) -> Any:
        """`config` with the architecture options a recipe sets on a role (`models.<role>.arch`; FastVideo:
        the causal Wan's num_frames_per_block, pipeline.dit_config.local_attn_size / sink_size)."""
        if not arch:
            return config
        fields = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
        for name in arch:
            if name not in fields:
                fail(where, f"{key}.{name}", f"is not an architecture option of the {self.name} family's config")
        config = dataclasses.replace(config, **dict(arch))
        if hasattr(config, "check"):
            config.check(f"{where}: {key}" if where else key)
        return config

    # ------------------------------------------------------------------ configuration (abstract)

    @abc.abstractmethod
    def config_from_diffusers(self, raw: dict, where: object) -> Any:
        """The model config from a Diffusers config.json dict; one-line UserError when it is not one."""

    @abc.abstractmethod
    def config_to_diffusers(self, config: Any) -> dict:
        """The Diffusers config.json dict of `config` (with `_class_name`)."""

    @abc.abstractmethod
    def describe(self, config: Any) -> str:
        """A few words on the architecture for the dry-run plan (e.g. "30 layers, dim 1536")."""

    def config_summary(self, config: Any) -> str:
        """The config fields a weights error names (default: `describe`)."""
        return self.describe(config)

    @property
    def label(self) -> str:
        return self.model_label or self.diffusers_class_name

    # ------------------------------------------------------------------ model (abstract)

    @abc.abstractmethod
    def build_model(self, config: Any, *, rngs, param_dtype: Any, dtype: Any, remat_policy: str = "none",
                    attention_backend: str = "auto"):
        """The nnx.Module (random initialisation from `rngs`)."""

    @abc.abstractmethod
    def tensor_keys(self, config: Any) -> list:
        """The key map: one fvjax.models.keymap.TensorKey per reference tensor, in state_dict order."""

    # ------------------------------------------------------------------ derived (generic)

    def abstract_model(self, config: Any, param_dtype: Any = None, **model_kwargs):
        """The model with ShapeDtypeStruct leaves (nnx.eval_shape; nothing allocated)."""
        import jax.numpy as jnp
        from flax import nnx

        param_dtype = jnp.float32 if param_dtype is None else param_dtype
        model_kwargs.setdefault("dtype", jnp.float32)
        return nnx.eval_shape(lambda: self.build_model(config, rngs=nnx.Rngs(0), param_dtype=param_dtype,
                                                       **model_kwargs))

    def abstract_params(self, config: Any, param_dtype: Any = None) -> dict:
        from fvjax.models.params import params_of
        return params_of(self.abstract_model(config, param_dtype))

    def param_logical_axes(self, config: Any) -> dict:
        from fvjax.models.params import param_logical_axes
        return param_logical_axes(self.abstract_model(config))

    def model_from_params(self, config: Any, params: dict, **model_kwargs):
        """A model whose parameters are `params` (pure dict; arrays used as given, no random init)."""
        from fvjax.models.params import model_from_params
        return model_from_params(self.abstract_model(config, **model_kwargs), params)

    def leaf_shapes(self, config: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
        from fvjax.models.keymap import leaf_shapes
        return leaf_shapes(self.tensor_keys(config))

    def resolve_model(self, path: str, where: object, key: str) -> ModelSource:
        """What a role's `path` names: a preset, fvjax weights, Diffusers weights (config only, no tensor
        read), or nothing usable on this machine (with the reason)."""
        from fvjax.weights.sources import resolve_model

        return resolve_model(self, path, where, key)

    # ------------------------------------------------------------------ optional hooks

    def default_flow_shift(self, model_path: str) -> float:
        """The flow shift a recipe gets when pipeline_config.flow_shift is not given."""
        return self.defaults.flow_shift

    def check_training(self, training: Any, where: object) -> None:
        """Family-specific checks of the recipe's TrainingArgs (one-line UserError)."""

    def latent_statistics(self, pipeline_path: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Per-channel (mean, std) that normalise dataset latents for the model, or None (used as stored).
        `pipeline_path` is training.model_path (its VAE's config may say), possibly empty."""
        return None

    def is_pipeline(self, path: Path) -> bool:
        """Whether a local directory holds a pipeline's VAE and text encoder (validation's components)."""
        return False

    def load_prompt_encoder(self, pipeline: str, dtype: Any = None, *, where: object = "path",
                            batch_size: int = 8):
        """An object with `encode(prompts) -> float32 [B, text_len, text_dim]` and
        `encode_with_mask(prompts, text_len) -> (embeds, int32 mask)`, and `config.d_model`."""
        fail(where, None, f"the {self.name} family has no text encoder")

    def load_video_decoder(self, pipeline: str, dtype: Any = None, *, where: object = "path"):
        """A `fvjax.inference.text_to_video.VideoDecoder` for the model's (normalised) latents."""
        fail(where, None, f"the {self.name} family has no VAE")

    def load_vae(self, pipeline: str, dtype: Any = None, *, where: object = "path"):
        """The nnx VAE: `encode(video [B, 3, F, H, W] in [-1, 1]) -> (mean, logvar)` (preprocessing)."""
        fail(where, None, f"the {self.name} family has no VAE")

    def forward_flops(self, config: Any, latent_shape: tuple[int, int, int, int], text_len: int) -> float | None:
        """Matmul FLOPs (2 per multiply-add) of one forward of one sample with latents [C, T, H, W]; None
        when the family does not say (MFU and the AOT report need it)."""
        return None

    def write_demo_pipeline(self, out: str | Path, seed: int = 0) -> Path:
        """A tiny random pipeline in the reference on-disk layout, for demos and tests."""
        fail("--family", None, f"the {self.name} family has no demo pipeline")

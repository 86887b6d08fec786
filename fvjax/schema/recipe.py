"""The normalised recipe: frozen dataclasses the rest of fvjax reads (nothing else reads YAML)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from fvjax.lora.spec import LoraSpec
from fvjax.schema.pipeline_config import PipelineConfig
from fvjax.schema.training_args import TrainingArgs
from fvjax.sharding.mesh import MeshPlan


@dataclasses.dataclass(frozen=True)
class RoleSpec:
    name: str
    family: str
    path: str
    trainable: bool = True
    # True: training.init_weights_from_safetensors does not apply to this role (FastVideo's teacher/critic).
    disable_custom_init_weights: bool = False
    # This role's own initial-weights file (FastVideo's current models.<role>.transformer_override_safetensor);
    # it wins over training.init_weights_from_safetensors.
    transformer_override_safetensor: str = ""
    # models.<role>.lora (fvjax/lora/spec.py): only low-rank factors of this role are trained; None: all weights
    lora: LoraSpec | None = None
    # models.<role>.arch: fields of the family's model config the recipe sets over the weights' config.json
    # (the causal Wan's num_frames_per_block / local_attn_size / sink_size), sorted (name, value) pairs
    arch: tuple[tuple[str, Any], ...] = ()


def key_under(key: str, prefix: str) -> bool:
    """Whether dotted `key` is `prefix` or inside it (a field or a list item)."""
    return key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + "[")


def renamed_key(key: str, names: Mapping[str, str]) -> str:
    """`key` with its longest prefix found in `names` replaced by that prefix's name."""
    best = max((k for k in names if key_under(key, k)), key=len, default=None)
    return key if best is None else names[best] + key[len(best):]


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where each value came from (for the dry run and messages; not part of the experiment). Keys are
    canonical dotted keys (training.<field>, method_config.<field>, pipeline_config.<field>, models.<role>.<field>)."""
    written: Mapping[str, str] = dataclasses.field(default_factory=dict)   # canonical key -> as written
    defaults: Mapping[str, str] = dataclasses.field(default_factory=dict)  # canonical key -> why (a default)
    given: frozenset[str] = frozenset()                 # canonical keys the recipe file or command line set
    cli: Mapping[str, str] = dataclasses.field(default_factory=dict)       # key as written -> value typed
    ignored: tuple[tuple[str, str], ...] = ()           # (key as written, why fvjax accepts and ignores it)

    def shown(self, key: str) -> str:
        """The recipe's own name for a canonical key."""
        return renamed_key(key, self.written)

    def origin(self, key: str) -> str:
        shown = self.shown(key)
        if shown in self.cli:
            return "command line"
        if key in self.given:
            return "recipe"
        return self.defaults.get(key, "default")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One experiment. Equal recipes (whatever form they were written in) compare equal; where it came
    from (`source`, `text`, `form`, `keys`) is kept for messages and checkpoints but not compared."""
    family: str
    method: str
    roles: Mapping[str, RoleSpec]
    training: TrainingArgs
    pipeline: PipelineConfig
    method_config: Any                       # the method's frozen config (DMD2Config, FinetuneConfig, ...)
    mesh: MeshPlan
    source: Path | None = dataclasses.field(default=None, compare=False)
    text: str = dataclasses.field(default="", compare=False, repr=False)
    # "phase2" (distill:) | "phase3" (recipe:) | "fastvideo_train" (FastVideo's current schema, method: _target_)
    form: str = dataclasses.field(default="phase3", compare=False)
    roles_key: str = dataclasses.field(default="models", compare=False)  # "models" or "roles", as written
    training_given: frozenset[str] = dataclasses.field(default=frozenset(), compare=False, repr=False)
    provenance: Provenance = dataclasses.field(default_factory=Provenance, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.roles, MappingProxyType):
            object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))

    @property
    def mode(self):
        return self.training.mode

    @property
    def trainable_roles(self) -> tuple[str, ...]:
        return tuple(name for name, role in self.roles.items() if role.trainable)

    @property
    def frozen_roles(self) -> tuple[str, ...]:
        return tuple(name for name, role in self.roles.items() if not role.trainable)

    def role_key(self, name: str, field: str | None = None) -> str:
        key = f"{self.roles_key}.{name}"
        return f"{key}.{field}" if field else key

    def init_weights_override(self, role: str) -> str | None:
        """The safetensors file that replaces this role's initial weights, if any (the role's own
        transformer_override_safetensor, else training.init_weights_from_safetensors; FastVideo skips both
        for roles with disable_custom_init_weights, and so does fvjax)."""
        spec = self.roles[role]
        if spec.disable_custom_init_weights:
            return None
        return spec.transformer_override_safetensor or self.training.init_weights_from_safetensors or None

    def with_overrides(self, *, output_dir: str | None = None, resume_from_checkpoint: str | None = None
                       ) -> "Recipe":
        """The CLI's runtime overrides (not part of the experiment definition)."""
        changes: dict[str, Any] = {}
        if output_dir is not None:
            changes["output_dir"] = output_dir
        if resume_from_checkpoint is not None:
            changes["resume_from_checkpoint"] = resume_from_checkpoint
        if not changes:
            return self
        return dataclasses.replace(self, training=self.training.replace(**changes))


def recipe_fields(recipe: Recipe) -> dict[str, Any]:
    """Every compared value of a recipe under its canonical dotted key (roles field by field)."""
    out: dict[str, Any] = {"recipe.family": recipe.family, "recipe.method": recipe.method, "mesh": recipe.mesh}
    for name, role in recipe.roles.items():
        out |= {f"models.{name}.{f.name}": getattr(role, f.name) for f in dataclasses.fields(role)}
    for section, obj in (("training", recipe.training), ("pipeline_config", recipe.pipeline),
                         ("method_config", recipe.method_config)):
        out |= {f"{section}.{f.name}": getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return out


def differences(a: Recipe, b: Recipe) -> dict[str, tuple[Any, Any]]:
    """{canonical key: (a's value, b's value)} where two recipes differ, in a's key order."""
    fa, fb = recipe_fields(a), recipe_fields(b)
    return {k: (fa.get(k), fb.get(k)) for k in list(fa) + [k for k in fb if k not in fa] if fa.get(k) != fb.get(k)}

"""The dry-run plan: roles with their architecture, parameter counts and per-device bytes on the
recipe's declared mesh, computed abstractly (no weights read, no devices needed)."""
from __future__ import annotations

import dataclasses
import functools

from fvjax.data.prompt_files import describe_prompts
from fvjax.families.api import Family, ModelSource
from fvjax.families.registry import get_family
from fvjax.methods.api import TEXT_ONLY
from fvjax.methods.registry import get_method
from fvjax.recipe.preflight import Problem, find_problems, resolve_sources
from fvjax.recipe.resolved import FORMS, resolved_lines
from fvjax.schema.recipe import Recipe
from fvjax.sharding.mesh import MeshPlan
from fvjax.sharding.rules import param_specs, per_device_count, rules_for

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class RoleMemory:
    num_params: int
    params_per_device: int          # scalars of this role's params held by one device
    param_bytes: int                # at dit_precision
    optimizer_bytes: int            # AdamW m and v, fp32 (trainable roles)
    master_bytes: int               # fp32 master copy when params are not fp32 (trainable roles)
    # A LoRA role: param_bytes is its frozen base (0 when another role holds the same weights: `shared_with`)
    # plus its factors; the optimizer and master bytes are the factors' only.
    lora_params: int = 0            # scalars of the LoRA factors (all devices)
    lora_bytes: int = 0             # the factors held by one device
    lora_layers: int = 0            # adapted Linears (per layer)
    shared_with: str = ""

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.optimizer_bytes + self.master_bytes


@dataclasses.dataclass(frozen=True)
class RolePlan:
    name: str
    trainable: bool
    source: ModelSource
    memory: RoleMemory | None
    architecture: str = ""          # the family's description of the config


@dataclasses.dataclass(frozen=True)
class RunPlan:
    recipe: Recipe
    rules_name: str
    roles: tuple[RolePlan, ...]
    problems: tuple[Problem, ...]
    downloads: dict = dataclasses.field(default_factory=dict)   # hub id -> (file patterns, recipe key)

    @property
    def total_bytes_per_device(self) -> int:
        return sum(r.memory.total_bytes for r in self.roles if r.memory is not None)


@functools.lru_cache(maxsize=32)
def role_memory(family: Family, config, trainable: bool, precision: str, mesh: MeshPlan) -> RoleMemory:
    from fvjax.models.params import count_params

    shapes = family.abstract_params(config)
    specs = param_specs(family.param_logical_axes(config), shapes, rules_for(mesh)[1], mesh)
    per_device = per_device_count(shapes, specs, mesh)
    width = DTYPE_BYTES[precision]
    return RoleMemory(
        num_params=count_params(shapes), params_per_device=per_device, param_bytes=per_device * width,
        optimizer_bytes=2 * 4 * per_device if trainable else 0,
        master_bytes=4 * per_device if trainable and precision != "fp32" else 0)


def lora_memory(recipe: Recipe, name: str, family: Family, config, shared_with: str | None) -> RoleMemory:
    """A LoRA role's bytes per device: its frozen base (none when shared) and its factors with AdamW."""
    import jax.numpy as jnp

    from fvjax.lora.build import lora_model
    from fvjax.models.params import count_params

    precision, mesh = recipe.training.dit_precision, recipe.mesh
    base = role_memory(family, config, False, precision, mesh)
    lora = lora_model(family, config, recipe.roles[name].lora, jnp.float32, where=recipe.source,
                      key=recipe.role_key(name, "lora"))
    specs = param_specs(lora.factor_axes, lora.abstract_factors, rules_for(mesh)[1], mesh)
    per_device = per_device_count(lora.abstract_factors, specs, mesh)
    factor_bytes = per_device * DTYPE_BYTES[precision]
    return RoleMemory(
        num_params=base.num_params, params_per_device=per_device,
        param_bytes=(0 if shared_with else base.param_bytes) + factor_bytes,
        optimizer_bytes=2 * 4 * per_device, master_bytes=4 * per_device if precision != "fp32" else 0,
        lora_params=count_params(lora.abstract_factors), lora_bytes=factor_bytes,
        lora_layers=sum(len(t.module_names) for t in lora.targets), shared_with=shared_with or "")


def build_plan(recipe: Recipe) -> RunPlan:
    sources = resolve_sources(recipe)
    roles = []
    # as fvjax/training/roles.py: frozen and LoRA roles share equal weights, held by a frozen role if any
    bases: dict[tuple, str] = {}
    for name, role in recipe.roles.items():
        if not role.trainable:
            bases.setdefault((role.path, recipe.init_weights_override(name), sources[name].kind), name)
    for name, role in recipe.roles.items():
        source = sources[name]
        memory, architecture = None, ""
        origin = (role.path, recipe.init_weights_override(name), source.kind)
        if source.config is not None:
            family = get_family(role.family)
            if role.lora is not None:
                memory = lora_memory(recipe, name, family, source.config, bases.get(origin))
            else:
                memory = role_memory(family, source.config, role.trainable, recipe.training.dit_precision,
                                     recipe.mesh)
                if not role.trainable and bases[origin] != name:
                    memory = dataclasses.replace(memory, param_bytes=0, shared_with=bases[origin])
            architecture = family.describe(source.config)
        if not role.trainable or role.lora is not None:
            bases.setdefault(origin, name)
        roles.append(RolePlan(name, role.trainable, source, memory, architecture))
    from fvjax.weights.hub import wanted

    return RunPlan(recipe, rules_for(recipe.mesh)[0], tuple(roles), tuple(find_problems(recipe, sources)),
                   wanted(recipe))


_KIND = {"diffusers": "Diffusers weights", "fvjax": "fvjax weights", "preset": "built-in preset, random init",
         "unavailable": "weights not here"}


def _gib(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _count(n: int) -> str:
    return f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.3f} M" if n >= 1e5 else str(n)


def render(plan: RunPlan, devices_present: str, *, resolved: bool = True) -> str:
    r, t, m = plan.recipe, plan.recipe.training, plan.recipe.mesh
    lines = [
        f"fvjax dry run: {r.source}",
        f"  recipe      family={r.family} method={r.method} mode={t.mode.value} (written in {FORMS[r.form]})",
        f"  topology    planned for the recipe's declared {m.num_devices} device(s), without them; "
        f"this machine has {devices_present}",
        f"  mesh        {m.describe()}  (data parallel {m.data_parallel}, parameter shards {m.param_shards}, "
        f"rules preset {plan.rules_name})",
        f"  batch       {t.train_batch_size} per data-parallel group x {m.data_parallel} groups x "
        f"{t.grad_accum} accumulation = {t.train_batch_size * m.data_parallel * t.grad_accum} samples per update",
        f"  precision   params {t.dit_precision} (dit_precision), compute "
        f"{'fp32' if t.mixed_precision in ('no', 'fp32', 'float32') else 'bf16'} (mixed_precision), AdamW moments fp32",
        "  roles:",
    ]
    for role in plan.roles:
        state = "trainable" if role.trainable else "frozen"
        head = f"    {role.name:<8} {state:<9} {role.source.path}  [{_KIND[role.source.kind]}]"
        if role.memory is None:
            lines.append(head + "  (architecture unknown: parameter count and memory not planned)")
            continue
        mem = role.memory
        lines.append(f"{head}  {_count(mem.num_params)} params ({role.architecture})")
        if mem.lora_params:
            base = (f"frozen base shared with {mem.shared_with}" if mem.shared_with else
                    f"frozen base {_gib(mem.param_bytes - mem.lora_bytes)}")
            detail = (f"{base} + LoRA factors {_gib(mem.lora_bytes)} ({_count(mem.lora_params)} params on "
                      f"{mem.lora_layers} Linears)")
        elif mem.shared_with:
            detail = f"params shared with {mem.shared_with}"
        else:
            detail = f"params {_gib(mem.param_bytes)}"
        if role.trainable:
            detail += f" + AdamW m,v {_gib(mem.optimizer_bytes)}"
            if mem.master_bytes:
                detail += f" + fp32 master {_gib(mem.master_bytes)}"
        lines.append(f"             per device: {detail} = {_gib(mem.total_bytes)}")
    lines.append(f"  state per device (all roles, before activations): {_gib(plan.total_bytes_per_device)}")
    lines.append(f"  method      {r.method_config}")
    needs = get_method(r.method).data_needs(r.method_config)
    lines.append(f"  data        {t.data_path or '(unset)'}: the method reads "
                 f"{'text embeddings only (latents give the shape)' if needs == TEXT_ONLY else 'latents and text embeddings'}")
    lines.append(f"  pipeline    flow_shift={r.pipeline.flow_shift} sampler_kind={r.pipeline.sampler_kind}")
    lines.append(f"  training    steps={t.max_train_steps} seed={t.seed} lr={t.learning_rate} "
                 f"betas={t.betas} scheduler={t.lr_scheduler} output_dir={t.output_dir or '(unset)'}")
    saves = (f"every {t.training_state_checkpointing_steps} steps" if t.training_state_checkpointing_steps
             else "never (training_state_checkpointing_steps is 0)")
    lines.append(f"  checkpoint  {saves}, keep {t.checkpoints_total_limit or 'all'}; validation "
                 f"{'every %g steps' % t.validation_steps if t.log_validation else 'off'}")
    if t.log_validation and (prompts := describe_prompts(t.validation_dataset_file)):
        lines.append(f"  validation  {prompts}")
    if resolved:
        lines.append("  resolved recipe (every value the run reads, and where it came from):")
        lines += resolved_lines(r)
    for key, why in r.provenance.ignored:
        lines.append(f"  note: {key} is accepted but ignored ({why})")
    for repo, (patterns, key) in plan.downloads.items():
        lines.append(f"  download    {r.provenance.shown(key)}: {repo} is not in the local Hugging Face cache; a real "
                     f"run downloads it first ({', '.join(patterns)}; HF_HUB_OFFLINE=1 forbids it)")
    for problem in plan.problems:
        lines.append(f"  warning: missing input: {r.provenance.shown(problem.key)}: {problem.message}")
    verdict = "a real run would refuse to start until the warnings above are fixed" if plan.problems \
        else "ready to train"
    lines.append(f"  dry run OK: {verdict}")
    return "\n".join(lines)

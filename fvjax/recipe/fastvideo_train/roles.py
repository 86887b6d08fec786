"""`models.<role>` of FastVideo's current schema (spec fastvideo_v3_recipes.md §1.4) -> fvjax roles.

Each role names its class (`_target_` -> the family) and weights (`init_from`). The per-role options
either become fvjax settings (flow_shift of the student, the rematerialisation policy, the initial-weights
override), mean nothing under JAX (the PyTorch attention kernels) and are listed as ignored, or would
change what is trained and are refused until fvjax implements them (sparse / quantised attention). `lora`
is read as the fvjax recipe's `models.<role>.lora` (the same block); the causal Wan's
`num_frames_per_block` becomes `models.<role>.arch`.
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.lora.spec import read_lora
from fvjax.recipe.fastvideo_train.targets import family_for_target
from fvjax.schema import fields as F

ROLE_KEYS = ("_target_", "init_from", "trainable", "disable_custom_init_weights", "flow_shift", "attention_backend",
             "enable_gradient_checkpointing_type", "transformer_override_safetensor", "init_weights_from_safetensors",
             "lora", "num_frames_per_block", "init_from_checkpoint", "init_from_checkpoint_role")
DEFAULT_FLOW_SHIFT = 3.0   # each role's own FlowMatchEulerDiscreteScheduler
# PyTorch kernels for dense attention: fvjax chooses its own (splash / cuDNN / XLA), same maths.
DENSE_BACKENDS = ("FLASH_ATTN", "TORCH_SDPA", "SAGE_ATTN", "SAGE_ATTN_THREE")
CHANGING_BACKENDS = {
    "ATTN_QAT_INFER": "quantised attention (QAT)", "ATTN_QAT_TRAIN": "quantised attention (QAT)",
    "VIDEO_SPARSE_ATTN": "video sparse attention (VSA)", "VIDEO_SPARSE_ATTN_H3": "video sparse attention (VSA)",
    "BSA_ATTN": "block sparse attention", "VMOBA_ATTN": "V-MoBA attention", "SLA_ATTN": "sparse-linear attention",
    "SAGE_SLA_ATTN": "sparse-linear attention", "NABLA_ATTN": "NABLA attention", "NO_ATTENTION": "no attention",
}
REMAT = (None, "full", "ops", "block_skip")


@dataclasses.dataclass
class Role:
    family: str
    raw: dict                       # the canonical role mapping (family, path, trainable, ...)
    flow_shift: float
    remat: str | None               # this role's own enable_gradient_checkpointing_type (None: the fallback)
    ignored: list[tuple[str, str]]  # (key, why)


def _attention_backend(value, where: object, key: str) -> str | None:
    if value is None:
        return None
    name = F.read_str(value, where, key).strip().upper()
    if name in CHANGING_BACKENDS:
        fail(where, key, f"is {value!r}: {CHANGING_BACKENDS[name]} is not implemented in fvjax; remove it for "
             "dense attention")
    if name not in DENSE_BACKENDS:
        fail(where, key, f"is {value!r}; FastVideo's backends are {', '.join(DENSE_BACKENDS + tuple(CHANGING_BACKENDS))}")
    return name


def read_role(name: str, value, where: object) -> Role:
    key = f"models.{name}"
    spec = F.mapping(value, where, key)
    for field in spec:
        if field not in ROLE_KEYS:
            F.unknown_key(where, f"{key}.{field}", field, ROLE_KEYS)
    for required in ("_target_", "init_from"):
        if required not in spec:
            fail(where, f"{key}.{required}", "missing; each role gives its class (_target_, e.g. "
                 "fastvideo.train.models.wan.WanModel) and weights (init_from, a hub id or Diffusers directory)")
    family = family_for_target(spec["_target_"], where, f"{key}._target_")
    for legacy in ("init_from_checkpoint", "init_from_checkpoint_role"):
        if legacy in spec:
            fail(where, f"{key}.{legacy}", "FastVideo dropped this warm start before merging its current schema "
                 "(it is ignored there); export the checkpoint with `python -m fvjax.convert` and use init_from "
                 "or transformer_override_safetensor")
    arch = {}
    if spec.get("num_frames_per_block") is not None:
        if family.name != "wan_causal":
            fail(where, f"{key}.num_frames_per_block", "is an option of the causal Wan student (WanCausalModel) "
                 "only; remove it")
        blocks = F.read_int(spec["num_frames_per_block"], where, f"{key}.num_frames_per_block")
        if not 1 <= blocks <= 3:
            fail(where, f"{key}.num_frames_per_block", f"is {blocks}; FastVideo's causal Wan takes 1..3")
        arch["num_frames_per_block"] = blocks
    lora = read_lora(spec.get("lora"), where, f"{key}.lora")   # checked here, read again by the loader
    ignored = []
    backend = _attention_backend(spec.get("attention_backend"), where, f"{key}.attention_backend")
    if backend is not None:
        ignored.append((f"{key}.attention_backend", f"{backend} is a PyTorch kernel; fvjax picks its own dense "
                                                    "attention kernel for the target"))
    override_keys = [k for k in ("transformer_override_safetensor", "init_weights_from_safetensors") if k in spec]
    if len(override_keys) == 2:
        fail(where, f"{key}.init_weights_from_safetensors", "is the legacy name of transformer_override_safetensor; "
             "keep one")
    raw = {"family": family.name, "path": spec["init_from"]}
    if lora is not None:
        raw["lora"] = spec["lora"]
    if arch:
        raw["arch"] = arch
    for field in ("trainable", "disable_custom_init_weights"):
        if field in spec:
            raw[field] = spec[field]
    if override_keys and spec[override_keys[0]] is not None:
        raw["transformer_override_safetensor"] = spec[override_keys[0]]
    flow_shift = spec.get("flow_shift")
    flow_shift = DEFAULT_FLOW_SHIFT if flow_shift is None else F.read_float(flow_shift, where, f"{key}.flow_shift")
    F.check_flow_shift(flow_shift, where, f"{key}.flow_shift")
    remat = F.choice(REMAT)(spec.get("enable_gradient_checkpointing_type"), where,
                            f"{key}.enable_gradient_checkpointing_type")
    return Role(family.name, raw, flow_shift, remat, ignored)

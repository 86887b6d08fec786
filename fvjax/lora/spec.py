"""`models.<role>.lora` of a recipe, as FastVideo's `fastvideo/train/utils/lora.py::LoraConfig` reads it.

FastVideo: `enable` switches LoRA on (a rank without it is ignored), `rank` must then be > 0, `alpha`
defaults to the rank, the delta is scaled by alpha / rank, and `target_modules` (default below) are
substrings of module names; names containing an architecture's excluded words (Wan: "embedder") never
match, and zero matches is an error.

fvjax adds `init_from`: a Diffusers / PEFT LoRA file (or a directory holding
pytorch_lora_weights.safetensors) whose factors the role starts from instead of B = 0.
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.schema import fields as F

# fastvideo/train/utils/lora.py DEFAULT_LORA_TARGET_MODULES
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "to_q", "to_k", "to_v", "to_out", "to_qkv",
                          "to_gate_compress")
LORA_KEYS = ("enable", "rank", "alpha", "target_modules", "init_from")


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    init_from: str = ""

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def __repr__(self) -> str:   # the recipe's own block (the dry run lists resolved values with repr)
        return repr(lora_mapping(self))


def read_lora(value, where: object, key: str) -> LoraSpec | None:
    """The role's LoraSpec, or None when the block is absent or `enable` is false."""
    if value is None:
        return None
    spec = F.mapping(value, where, key)
    for name in spec:
        if name not in LORA_KEYS:
            F.unknown_key(where, f"{key}.{name}", name, LORA_KEYS)
    if not F.read_bool(spec.get("enable", False), where, f"{key}.enable"):
        return None
    if spec.get("rank") is None:
        fail(where, f"{key}.rank", "missing; LoRA needs an explicit rank > 0 (FastVideo's recipes use 16..128)")
    rank = F.read_int(spec["rank"], where, f"{key}.rank")
    if rank <= 0:
        fail(where, f"{key}.rank", f"is {rank}; it must be > 0")
    alpha = spec.get("alpha")
    alpha = rank if alpha is None else F.read_int(alpha, where, f"{key}.alpha")
    if alpha <= 0:
        fail(where, f"{key}.alpha", f"is {alpha}; it must be > 0 (the delta is scaled by alpha / rank)")
    targets = spec.get("target_modules")
    if targets is None:
        targets = DEFAULT_TARGET_MODULES
    else:
        targets = tuple(F.str_list(targets, where, f"{key}.target_modules"))
        if not targets or any(not t for t in targets):
            fail(where, f"{key}.target_modules", "must be a non-empty list of non-empty module name parts "
                 "(e.g. [to_q, to_k, to_v, to_out])")
    init_from = F.optional(F.read_str)(spec.get("init_from"), where, f"{key}.init_from") or ""
    return LoraSpec(rank=rank, alpha=float(alpha), target_modules=targets, init_from=init_from)


def lora_mapping(spec: LoraSpec | None) -> dict | None:
    """The recipe block of `spec` (the upgrade writes it back)."""
    if spec is None:
        return None
    alpha = int(spec.alpha) if float(spec.alpha).is_integer() else spec.alpha
    out = {"enable": True, "rank": spec.rank, "alpha": alpha, "target_modules": list(spec.target_modules)}
    return out | ({"init_from": spec.init_from} if spec.init_from else {})

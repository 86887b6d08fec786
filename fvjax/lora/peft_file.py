"""Diffusers / PEFT LoRA files (`pytorch_lora_weights.safetensors`), written and read.

Layout (what `WanPipeline.load_lora_weights` and `WanTransformer3DModel.load_lora_adapter` read):
`transformer.<Diffusers module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r] per adapted Linear
and layer, and the adapter config in the safetensors metadata (`lora_adapter_metadata`: JSON with
`transformer.r`, `transformer.lora_alpha`, `transformer.target_modules`), which Diffusers passes to
PEFT's LoraConfig. With the alpha stored there B is written as trained, so a file round-trips exactly;
a file without that metadata is read as Diffusers reads it: alpha = rank for every module (scale 1).

Reading accepts that layout with or without the `transformer.` prefix, PEFT's per-module rank and alpha
patterns, and refuses what fvjax does not implement (DoRA, LoRA biases, other adapters) in one line.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from fvjax.errors import fail
from fvjax.lora.factors import factor_pairs
from fvjax.lora.targets import LoraTarget
from fvjax.weights.safetensors_io import SafetensorsFile, TensorSpec, write_safetensors

FILE_NAME = "pytorch_lora_weights.safetensors"
PREFIX = "transformer."
METADATA_KEY = "lora_adapter_metadata"   # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
# the layouts Diffusers' WanLoraLoaderMixin converts (_convert_non_diffusers_wan_lora_to_diffusers, musubi)
FOREIGN_PREFIXES = ("diffusion_model.", "lora_unet_")


def _number(x: float):
    return int(x) if float(x).is_integer() else float(x)


def write_peft_lora(path: str | Path, targets: list[LoraTarget], factors: dict, rank: int, alpha: float,
                    dtype=None) -> Path:
    """Write the factors of `targets` as a Diffusers LoRA file (whole file or nothing: written beside and
    renamed). `dtype`: the stored dtype (default: the factors')."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for target, a, b in factor_pairs(factors, targets):
        a, b = np.asarray(a), np.asarray(b)
        if dtype is not None:
            a, b = a.astype(dtype), b.astype(dtype)
        for i, name in enumerate(target.module_names):
            la, lb = (a[i], b[i]) if target.layers is not None else (a, b)
            tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(la.T)
            tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(lb.T)
    modules = sorted(n for t in targets for n in t.module_names)
    config = {f"{PREFIX}r": rank, f"{PREFIX}lora_alpha": _number(alpha), f"{PREFIX}target_modules": modules}
    metadata = {"format": "pt", METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_safetensors(tmp, [TensorSpec(k, v.dtype, v.shape) for k, v in tensors.items()],
                          lambda k: tensors[k], metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclasses.dataclass(frozen=True)
class LoadedModule:
    a: np.ndarray          # [in, r] (fvjax layout)
    b: np.ndarray          # [r, out]
    scale: float           # alpha / r of this module as Diffusers applies it


@dataclasses.dataclass(frozen=True)
class LoadedLora:
    path: Path
    modules: dict[str, LoadedModule]       # Diffusers module name -> factors

    @property
    def ranks(self) -> set[int]:
        return {m.a.shape[1] for m in self.modules.values()}


def _pattern(patterns: dict, name: str, default):
    # PEFT matches pattern keys against the end of the module name
    for key, value in patterns.items():
        if name == key or name.endswith("." + key):
            return value
    return default


def _resolve(path: str | Path, where: object) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / FILE_NAME
    if not p.is_file():
        fail(where, None, f"LoRA file {str(path)!r} not found (a .safetensors file, or a directory holding {FILE_NAME})")
    return p


def read_peft_lora(path: str | Path, where: object = "--lora") -> LoadedLora:
    """A Diffusers / PEFT LoRA file's factors per module, with the scale Diffusers would apply."""
    p = _resolve(path, where)
    f = SafetensorsFile(p)
    names = list(f.entries)
    foreign = next((n for n in names if n.startswith(FOREIGN_PREFIXES)), None)
    if foreign is not None:
        fail(p, foreign, "is the original Wan / ComfyUI / musubi LoRA layout; fvjax reads Diffusers/PEFT keys: "
             "convert it with Diffusers first (WanPipeline.lora_state_dict, then WanPipeline.save_lora_weights)")
    prefixed = any(n.startswith(PREFIX) for n in names)
    raw: dict[str, dict[str, str]] = {}
    for n in names:
        if prefixed and not n.startswith(PREFIX):
            fail(p, n, "is not a transformer LoRA tensor; fvjax reads the transformer's LoRA only (text encoder "
                 "LoRAs are not supported)")
        short = n[len(PREFIX):] if prefixed else n
        for part in (".lora_A.weight", ".lora_B.weight"):
            if short.endswith(part):
                raw.setdefault(short[:-len(part)], {})[part[6]] = n
                break
        else:
            what = ("DoRA magnitudes" if "lora_magnitude_vector" in n else "LoRA biases" if ".lora_B.bias" in n
                    else "a tensor of another layout")
            fail(p, n, f"is {what}; fvjax reads Diffusers/PEFT LoRA files of lora_A / lora_B weights only")
    if not raw:
        fail(p, None, "holds no lora_A / lora_B tensors")
    meta = f.metadata.get(METADATA_KEY)
    config = {}
    if meta:
        try:
            config = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in json.loads(meta).items()}
        except (json.JSONDecodeError, AttributeError):
            fail(p, METADATA_KEY, "is not a JSON object of LoRA settings")
    modules = {}
    for module, parts in raw.items():
        if set(parts) != {"A", "B"}:
            fail(p, module, "has only one of lora_A / lora_B")
        a, b = f.read(parts["A"]), f.read(parts["B"])
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            fail(p, module, f"lora_A {list(a.shape)} and lora_B {list(b.shape)} are not [r, in] and [out, r]")
        r = a.shape[0]
        if config:
            rank = _pattern(config.get("rank_pattern") or {}, module, config.get("r", r))
            alpha = _pattern(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", rank))
            scale = float(alpha) / float(rank)
        else:
            scale = 1.0   # Diffusers without alphas: alpha = rank per module
        modules[module] = LoadedModule(np.ascontiguousarray(a.T.astype(np.float32)),
                                       np.ascontiguousarray(b.T.astype(np.float32)), scale)
    return LoadedLora(p, modules)

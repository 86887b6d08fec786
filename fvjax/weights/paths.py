"""Where the weights are: a `path` given by the user -> a Diffusers transformer dir or an fvjax weights dir.

Accepted: a Diffusers pipeline dir (model_index.json + transformer/), a Diffusers transformer dir
(config.json + diffusion_pytorch_model*.safetensors), an fvjax weights dir (written by
`python -m fvjax.convert` or the trainer), or a Hugging Face hub id looked up in the local HF cache
(never downloaded here: the error says how to fetch it).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Mapping

from fvjax.errors import fail
from fvjax.io.json_file import read_json  # noqa: F401  (re-exported: the loaders import it from here)

MANIFEST_NAME = "fvjax_manifest.json"
CONFIG_NAME = "config.json"
PARAMS_DIR = "params"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class WeightsLocation:
    kind: str  # "diffusers" | "fvjax"
    directory: Path  # the transformer dir (Diffusers) or the fvjax weights dir
    given: str  # what the user passed, for messages


def resolve(path: str | os.PathLike, where: str = "path", transformers: Mapping[str, str] | None = None
            ) -> WeightsLocation:
    """Find the transformer weights that `path` names; `where` (a flag or recipe key) goes in errors. In a
    pipeline, the transformer must be of a class in `transformers` ({class name: label}) when given."""
    given = str(path)
    p = Path(given).expanduser()
    if not os.path.exists(p):   # (os.path: False for a name too long or with a NUL byte, not an error)
        if looks_like_hub_id(given):
            p = hub_snapshot(given, where)
        else:
            fail(where, None, f"{given}: no such file or directory (expected a Diffusers pipeline or "
                 "transformer directory, an fvjax weights directory, or a Hugging Face hub id org/name)")
    if p.is_file():
        fail(p, None, "is a file; pass the directory that holds it (a Diffusers transformer directory "
             "with config.json, or a pipeline directory with model_index.json)")
    if (p / MANIFEST_NAME).is_file():
        return WeightsLocation("fvjax", p, given)
    if (p / "model_index.json").is_file():
        return WeightsLocation("diffusers", _pipeline_transformer(p, transformers or {}), given)
    if (p / CONFIG_NAME).is_file():
        return WeightsLocation("diffusers", p, given)
    if (p / "transformer" / CONFIG_NAME).is_file():
        return WeightsLocation("diffusers", p / "transformer", given)
    fail(p, None, "not a weights directory: no model_index.json (Diffusers pipeline), config.json "
         f"(Diffusers transformer) or {MANIFEST_NAME} (fvjax weights) in it")


def _pipeline_transformer(p: Path, transformers: Mapping[str, str]) -> Path:
    return pipeline_component(p, "transformer", "transformer", tuple(transformers),
                              " or ".join(f"{label}s" for label in transformers.values()))


def pipeline_component(p: Path, component: str, label: str, class_name: str | tuple[str, ...], loads: str) -> Path:
    """The `component` folder of the Diffusers pipeline `p`, checked against its model_index.json (present,
    of class `class_name`, with a config.json)."""
    index_path = p / "model_index.json"
    index = read_json(index_path)
    entry = index.get(component) if isinstance(index, dict) else None
    if not entry:
        fail(index_path, component, f"missing: this pipeline has no {label} (is it a Wan pipeline?)")
    accepted = (class_name,) if isinstance(class_name, str) else tuple(class_name)
    if accepted and isinstance(entry, list) and len(entry) == 2 and entry[1] not in accepted:
        fail(index_path, component, f"is a {entry[1]}, not a {' or '.join(accepted)}; fvjax loads {loads}")
    sub = p / component
    if not (sub / CONFIG_NAME).is_file():
        fail(sub / CONFIG_NAME, None, f"file not found; the pipeline's {component}/ folder is incomplete "
             "(re-download it)")
    return sub


def looks_like_hub_id(given: str) -> bool:
    return bool(_HUB_ID.match(given)) and not given.startswith((".", "/"))


def hub_cache() -> str:
    """The hub cache, read now (not at huggingface_hub's import) so HF_HUB_CACHE / HF_HOME set late count."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else constants.HF_HUB_CACHE)


def hub_snapshot(repo_id: str, where: object, what: str = "model_index.json 'transformer/*'") -> Path:
    """The local-cache snapshot of a hub repo (a real run downloads what it needs first: fvjax/weights/hub.py;
    conversion and the dry run only look in the cache; the error says how to fetch `what`)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        # A relative path like outputs/run also has the org/name form: say both readings failed.
        fail(where, None, f"{repo_id}: no such local directory, and as a Hugging Face hub id not found in "
             f"the local cache ({cache}); a training run downloads it (unless HF_HUB_OFFLINE=1); here, fetch it with "
             f"`hf download {repo_id} --include {what}` (or set HF_HUB_CACHE / "
             "HF_HOME to the cache that holds it), or pass a local directory")


def existing_dir(path: str | os.PathLike, where: object, what: str) -> Path:
    """`path` as an existing directory (the cached snapshot for an org/name hub id)."""
    given = str(path)
    p = Path(given).expanduser()
    if not os.path.exists(p):   # (os.path: False for a name too long or with a NUL byte, not an error)
        if looks_like_hub_id(given):
            return hub_snapshot(given, where, what)
        fail(where, None, f"{given}: no such file or directory")
    if not p.is_dir():
        fail(where, None, f"{given} is a file; pass the directory that holds it")
    return p


def weight_files(d: Path, weights_name: str, index_name: str, saver: str) -> tuple[Path, dict[str, Path]]:
    """(the file listing the tensors: the index or the single file, {tensor name: safetensors file}) of a
    Hugging Face-style weights directory: `weights_name`, or `index_name` with its shards, or an unambiguous
    variant (e.g. *.fp16.safetensors). `saver` names what re-saves pickles as safetensors, for the error."""
    from fvjax.weights.safetensors_io import SafetensorsFile

    index, single = d / index_name, d / weights_name
    if not index.is_file() and not single.is_file():
        indexes, files = sorted(d.glob("*.safetensors.index.json")), sorted(d.glob("*.safetensors"))
        if len(indexes) == 1:
            index = indexes[0]
        elif len(files) == 1:
            single = files[0]
        elif indexes or files:
            fail(d, None, f"several safetensors weight sets ({', '.join(p.name for p in indexes or files)}); "
                 "keep one, or pass a directory holding exactly one")
        elif list(d.glob("*.bin")) or list(d.glob("*.pt")) or list(d.glob("*.pth")):
            fail(d, None, f"only PyTorch pickle weights (.bin/.pt/.pth) here; fvjax reads safetensors: re-save "
                 f"with {saver}'s save_pretrained(..., safe_serialization=True)")
        else:
            fail(d, None, f"no weights: expected {weights_name} or {index_name} next to config.json")
    if not index.is_file():
        return single, {name: single for name in SafetensorsFile(single).entries}
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        fail(index, "weight_map", "missing or not a {tensor name: shard file} object; the index is damaged")
    for key, fname in weight_map.items():
        if not (d / fname).is_file():
            fail(index, key, f"its shard file {fname} is missing from {d}; the download is incomplete, "
                 "re-download it")
    return index, {key: d / fname for key, fname in weight_map.items()}

"""Hugging Face hub ids, the way FastVideo users expect them: a role's `path` (or `training.model_path`)
that is a hub id not in the local cache is downloaded when a real run starts (only the files fvjax
reads; resumable; huggingface_hub's progress bars), unless HF_HUB_OFFLINE=1, which keeps fvjax to the
local cache (then a missing id is a missing input). The dry run downloads nothing: it says what a run
would fetch."""
from __future__ import annotations

import os

from fvjax.errors import UserError, fail
from fvjax.weights.paths import hub_cache, hub_snapshot, looks_like_hub_id

# A role's transformer: a pipeline's transformer/ folder, or (a repo without model_index.json) the
# transformer-only repo's files.
TRANSFORMER_FILES = ("model_index.json", "transformer/*")
TRANSFORMER_REPO_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json")
# What validation and DMD2's negative prompt read from training.model_path's pipeline.
PIPELINE_FILES = ("model_index.json", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_cached(repo_id: str) -> bool:
    try:
        hub_snapshot(repo_id, "path")
        return True
    except UserError:
        return False


def to_download(path: str) -> bool:
    """Whether a real run would download `path` (a hub id, not a local path, not cached, online)."""
    return (bool(path) and not offline() and looks_like_hub_id(path) and not os.path.exists(os.path.expanduser(path))
            and not is_cached(path))


def wanted(recipe) -> dict[str, tuple[tuple[str, ...], str]]:
    """{hub id: (file patterns, the recipe key that names it)} of what a run of `recipe` would download."""
    out: dict[str, tuple[set, str]] = {}
    for name, role in recipe.roles.items():
        if to_download(role.path):
            patterns, key = out.get(role.path, (set(), recipe.role_key(name, "path")))
            out[role.path] = (patterns | set(TRANSFORMER_FILES), key)
    model_path = recipe.training.model_path
    if to_download(model_path):
        patterns, key = out.get(model_path, (set(), "training.model_path"))
        out[model_path] = (patterns | set(PIPELINE_FILES), key)
    return {repo: (tuple(sorted(patterns)), key) for repo, (patterns, key) in out.items()}


def download_missing(recipe) -> None:
    """Fetch every hub id the recipe names and the cache lacks (a real run, before its input checks)."""
    from huggingface_hub import snapshot_download

    for repo_id, (patterns, key) in wanted(recipe).items():
        print(f"fvjax: downloading {repo_id} from the Hugging Face hub ({', '.join(patterns)}) into {hub_cache()}",
              flush=True)
        try:
            index = snapshot_download(repo_id, cache_dir=hub_cache(), allow_patterns=["model_index.json"])
            if not os.path.isfile(os.path.join(index, "model_index.json")):   # a transformer-only repo
                patterns = tuple(p for p in patterns if p not in TRANSFORMER_FILES) + TRANSFORMER_REPO_FILES
            snapshot_download(repo_id, cache_dir=hub_cache(), allow_patterns=list(patterns))
        except Exception as err:   # noqa: BLE001 - network, authentication, missing repo: one line each
            fail(recipe.source, recipe.provenance.shown(key), f"{repo_id}: download from the Hugging Face hub "
                 f"failed ({type(err).__name__}: "
                 f"{' '.join(str(err).split())[:300]}); check the id and your access (`hf auth login` for gated "
                 "repos), or set HF_HUB_OFFLINE=1 and pass a local directory")

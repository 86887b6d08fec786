"""The teacher-trajectory cache on disk, and the training data read from it.

Layout of `teacher_path_cache` (version 1):

    DIR/metadata.json              what the trajectories were made from (below); written before the first sample
    DIR/samples/NNNNNNNN.safetensors   one per sample of the source dataset, index NNNNNNNN:
        states       float32 [K, C, T, H, W]   the teacher's states at `timesteps` (the student's t_list[:-1])
        clean        float32 [C, T, H, W]      the trajectory's endpoint (the teacher's final x0)
        text_embeds  float32 [L, D]            the prompt's valid tokens (as the source dataset gave them)
    DIR/COMPLETE                   written once every sample is there

metadata.json: {"format", "version", "teacher" (the role's path), "teacher_inference_steps", "flow_shift",
"seed" (the trajectories' noise), "timesteps" (the stored states', noisiest first), "num_samples",
"latent_shape", "text_dim", "source" (the source dataset's fingerprint)}. A cache whose metadata differs from
what the recipe would make is refused in one line (the teacher is not compared once the recipe has none).

Only the states the student's t_list needs are stored (FastVideo stores all 48: ~201 MB per sample at
480x832, 21 latent frames; these are K + 1 = 5 of them). Each sample file is written to a temporary name
and renamed, so a sample is whole or absent and an interrupted run resumes with the missing ones;
safetensors files hold no timestamps, so a resumed cache is byte-identical to an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from fvjax.data.batches import DataConfig, TrainData
from fvjax.data.sample import RawSample
from fvjax.errors import UserError, fail

FORMAT_NAME = "fvjax-kd-trajectories"
VERSION = 1
METADATA = "metadata.json"
COMPLETE = "COMPLETE"
SAMPLES = "samples"
KEY = "method_config.teacher_path_cache"
# Compared with the recipe's expectation; `timesteps` separately (a subset is enough), `teacher` only if given.
_EXACT = ("format", "version", "teacher_inference_steps", "flow_shift", "seed", "num_samples", "latent_shape",
          "text_dim", "source")


def sample_file(root: Path, index: int) -> Path:
    return root / SAMPLES / f"{index:08d}.safetensors"


def is_complete(root: Path) -> bool:
    return (root / COMPLETE).is_file()


def read_metadata(root: Path) -> dict | None:
    path = root / METADATA
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        fail(path, None, f"cannot read the KD cache's metadata: {err}")


def check_metadata(root: Path, stored: dict, expected: dict) -> None:
    """One line for the first difference between a cache's metadata and what this recipe would make."""
    where = root / METADATA
    for key in _EXACT + (("teacher",) if expected.get("teacher") is not None else ()):
        if stored.get(key) != expected.get(key):
            fail(where, key, f"is {stored.get(key)!r} but the recipe makes {expected.get(key)!r}; this cache was made "
                 f"for other settings: delete {root} or give another {KEY}")
    missing = sorted(set(expected["timesteps"]) - set(stored.get("timesteps", ())), reverse=True)
    if missing:
        fail(where, "timesteps", f"holds the states at {stored.get('timesteps')} but t_list needs {missing} too; delete "
             f"{root} or give another {KEY}")


def write_metadata(root: Path, metadata: dict) -> None:
    (root / SAMPLES).mkdir(parents=True, exist_ok=True)
    _replace_atomically(root / METADATA, json.dumps(metadata, indent=1).encode())


def missing_samples(root: Path, num_samples: int) -> list[int]:
    present = {p.name for p in (root / SAMPLES).glob("*.safetensors")}
    return [i for i in range(num_samples) if sample_file(root, i).name not in present]


def write_sample(root: Path, index: int, states: np.ndarray, clean: np.ndarray, text_embeds: np.ndarray) -> None:
    from safetensors.numpy import save

    arrays = {"states": np.ascontiguousarray(states, np.float32), "clean": np.ascontiguousarray(clean, np.float32),
              "text_embeds": np.ascontiguousarray(text_embeds, np.float32)}
    _replace_atomically(sample_file(root, index), save(arrays))


def mark_complete(root: Path) -> None:
    _replace_atomically(root / COMPLETE, b"")


def _replace_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TrajectorySource:
    """The cache as a data source: sample i's latents are its clean endpoint, its text the prompt's tokens;
    `states(i)` gives the states at `timesteps` (a subset of the stored ones, in that order)."""

    format = "kd-trajectories"
    has_latents = True

    def __init__(self, root: Path, timesteps: tuple[int, ...]):
        self.path = str(root)
        self.root = root
        self.metadata = read_metadata(root) or {}
        stored = list(self.metadata.get("timesteps", ()))
        self._select = [stored.index(t) for t in timesteps]
        self._len = int(self.metadata["num_samples"])

    def __len__(self) -> int:
        return self._len

    def _read(self, index: int) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        if not 0 <= index < self._len:
            raise IndexError(index)
        file = sample_file(self.root, index)
        try:
            return load_file(file)
        except (OSError, ValueError) as err:   # safetensors raises SafetensorError, a ValueError-like error
            raise UserError(file, None, f"cannot read this KD trajectory sample: {err}")

    def __getitem__(self, index: int) -> RawSample:
        arrays = self._read(index)
        return RawSample(latents=arrays["clean"], text_embeds=arrays["text_embeds"],
                         where=str(sample_file(self.root, index)))

    def states(self, index: int) -> np.ndarray:
        return self._read(index)["states"][self._select]

    @property
    def fingerprint(self) -> dict:
        return {"format": self.format, "num_samples": self._len, "timesteps": self.metadata.get("timesteps"),
                "teacher": self.metadata.get("teacher"), "source": self.metadata.get("source")}


class TrajectoryData(TrainData):
    """TrainData over the cache: each batch also holds `trajectory` float32 [b, K, C, T, H, W], the states at
    t_list[:-1] (`latents` is the clean endpoint). The cache's latents are the teacher's, already in the
    model's space: no VAE statistics, no cropping; the text is used as stored (no CFG dropout, as FastVideo's
    KD loader)."""

    KEYS = ("latents", "text_embeds", "text_mask", "trajectory")

    def __init__(self, cfg: DataConfig, source: TrajectorySource, **kwargs):
        cfg = dataclasses.replace(cfg, num_latent_t=0, latents_mean=None, latents_std=None, training_cfg_rate=0.0,
                                  needs_latents=True)
        super().__init__(cfg, source=source, **kwargs)

    def load_sample(self, index: int) -> dict:
        sample = super().load_sample(index)
        sample["trajectory"] = np.asarray(self.source.states(int(index)), np.float32)
        return sample

    def batch(self, step: int) -> dict:
        samples = [self.load_sample(i) for i in self.local_sample_indices(step)]
        return {k: np.stack([s[k] for s in samples]) for k in self.KEYS}

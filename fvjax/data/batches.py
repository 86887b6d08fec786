"""The training data pipeline: batch `step` is a pure function of `step` (step-indexed, Levanter-style).

Order. One permutation of the dataset from `seed` (np.random.default_rng(seed)); every epoch walks it
again in the same order, as FastVideo's sampler does (one randperm at construction). With
`reshuffle_each_epoch` epoch e uses default_rng([seed, e]) instead. drop_last: an epoch has
num_samples // global_batch_size steps; the remainder of the permutation is skipped.
(FastVideo draws its permutation with torch.randperm, so the exact order differs from FastVideo's.)

Processes. The global batch of a step is the next global_batch_size entries of the permutation;
process p of P loads the contiguous block [p * B/P, (p+1) * B/P) of it (the layout
jax.make_array_from_process_local_data expects for a batch axis sharded over processes in order).

CFG dropout. With probability training_cfg_rate a sample's text embedding is replaced by zeros while its
mask keeps ones over the original length (FastVideo). The decision is a pure function of
(seed, sample index), random.Random(seed ^ index), so a sample is dropped in every epoch or never.

Resume. The iterator's state is {"next_step": k, ...} (JSON); a restored iterator yields batch k next,
identical to the uninterrupted run. The state also records the seed, batch size, process count and the
source's fingerprint; restoring onto a different dataset, seed or global batch size is refused (another
process count is fine: batch k is the same global batch, sliced differently).

Latents. Datasets hold the VAE posterior mean as the VAE made it (FastVideo's preprocessing and ours);
with `latents_mean` / `latents_std` set (the trainer sets Wan's VAE constants) each channel c becomes
(x_c - mean_c) / std_c, FastVideo's normalize_dit_input, before it reaches a model.

Text-only data (FastVideo's text_only parquet) holds no latents: with `needs_latents` False (a method
that reads text only, e.g. DMD2's simulate rollout) its batches carry zeros of `latent_shape`
([C, num_latent_t, H/8, W/8], from the recipe) in their place, for the shape; with `needs_latents` True
it is refused. Its stored embeddings are already padded to 512 tokens, so the mask is all ones.

Several datasets (a multi-dataset data_path) are one source, each dataset `repeat` times (sources.py);
the permutation runs over all of them.

Batches are dicts of numpy arrays:
    latents     float32 [b, 16, T, H, W]   (T cropped to num_latent_t when > 0; normalised; zeros for text-only data)
    text_embeds float32 [b, text_len, D]   (padded with zeros / cropped to text_len = 512)
    text_mask   int32   [b, text_len]      (1 over the valid tokens)
with b = global_batch_size / process_count. Loading runs in grain threads with a prefetch buffer.
"""
from __future__ import annotations

import dataclasses
import functools
import random
from typing import Iterator

import grain
import numpy as np

from fvjax.data.sample import FLAG, TEXT_ONLY_FOR_LATENTS, RawSample, Source, check_sample_shapes
from fvjax.data.sources import open_source
from fvjax.errors import UserError
from fvjax.schema.data_path import DataPath

# Effectively endless: the loop decides when to stop.
_ENDLESS_STEPS = 1 << 40

_KEYS = {"fvjax": ("latents", "text"), "parquet": ("vae_latent_shape", "text_embedding_shape")}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    data_path: DataPath                 # a path, or (path, repeat) pairs (fvjax/schema/data_path.py)
    global_batch_size: int              # samples per step over all processes (train_batch_size x data-parallel groups)
    seed: int = 42
    num_latent_t: int = 0               # crop latents to this many frames; 0 keeps them all
    training_cfg_rate: float = 0.0
    text_len: int = 512
    text_dim: int | None = None         # None: whatever the data holds; else checked
    latent_channels: int = 16
    latents_mean: tuple[float, ...] | None = None   # per-channel VAE statistics; None: latents used as stored
    latents_std: tuple[float, ...] | None = None
    reshuffle_each_epoch: bool = False  # False = FastVideo (the same order every epoch)
    needs_latents: bool = True          # False: the method reads text only; text-only data is accepted
    latent_shape: tuple[int, ...] | None = None   # [C, T, H, W] of text-only data's (zero) latents
    num_threads: int = 2                # grain reader threads
    prefetch_batches: int = 2


class TrainData:
    """Step-indexed access to the training batches of one process."""

    def __init__(self, cfg: DataConfig, process_index: int | None = None, process_count: int | None = None,
                 source: Source | None = None):
        if process_index is None or process_count is None:
            import jax
            process_index, process_count = jax.process_index(), jax.process_count()
        self.cfg = cfg
        self.process_index, self.process_count = process_index, process_count
        self.source = source if source is not None else open_source(cfg.data_path)
        self._latent_key, self._text_key = _KEYS.get(self.source.format, ("latents", "text_embeds"))
        if cfg.global_batch_size <= 0 or cfg.global_batch_size % process_count:
            raise UserError("recipe", "training.train_batch_size",
                            f"global batch size {cfg.global_batch_size} must be a positive multiple of the "
                            f"{process_count} processes")
        if not 0.0 <= cfg.training_cfg_rate <= 1.0:
            raise UserError("recipe", "training.training_cfg_rate", f"must be in [0, 1], got {cfg.training_cfg_rate}")
        self.num_samples = len(self.source)
        self.steps_per_epoch = self.num_samples // cfg.global_batch_size
        if self.steps_per_epoch == 0:
            raise UserError(cfg.data_path, FLAG, f"the dataset has {self.num_samples} samples, fewer than one global "
                                                 f"batch of {cfg.global_batch_size} (drop_last)")
        self.local_batch_size = cfg.global_batch_size // process_count
        first = self.source[0]
        check_sample_shapes(first.latents, first.text_embeds, first.where, self._latent_key, self._text_key,
                            cfg.latent_channels)
        self.has_latents = getattr(self.source, "has_latents", True)
        if not self.has_latents:
            self._init_text_only(cfg)
        else:
            self._init_latents(cfg, first)
        self.text_dim = int(first.text_embeds.shape[1])
        if cfg.text_dim is not None and cfg.text_dim != self.text_dim:
            raise UserError(first.where, self._text_key, f"text embeddings have dim {self.text_dim}, the model "
                                                         f"expects text_dim {cfg.text_dim}")

    def _init_text_only(self, cfg: DataConfig) -> None:
        if cfg.needs_latents:
            raise UserError(self.source.path, FLAG, TEXT_ONLY_FOR_LATENTS)
        shape = tuple(cfg.latent_shape or ())
        if len(shape) != 4 or min(shape) <= 0:
            raise UserError(self.source.path, FLAG, "text-only data holds no latents, so their shape comes from "
                                                    "the recipe: set training.num_latent_t, num_height and num_width")
        self.raw_latent_shape = self.latent_shape = shape

    def _init_latents(self, cfg: DataConfig, first: RawSample) -> None:
        self.raw_latent_shape = tuple(first.latents.shape)
        if cfg.num_latent_t > self.raw_latent_shape[1]:
            raise UserError(first.where, self._latent_key, f"latents have {self.raw_latent_shape[1]} frames, fewer "
                                                           f"than num_latent_t = {cfg.num_latent_t}")
        if cfg.latents_mean is not None:
            channels = self.raw_latent_shape[0]
            if len(cfg.latents_mean) != channels or len(cfg.latents_std or ()) != channels:
                raise UserError(first.where, self._latent_key, f"latents have {channels} channels but the VAE "
                                f"statistics have {len(cfg.latents_mean)}")
            self._mean = np.asarray(cfg.latents_mean, np.float32).reshape(channels, 1, 1, 1)
            self._std = np.asarray(cfg.latents_std, np.float32).reshape(channels, 1, 1, 1)
        t = cfg.num_latent_t or self.raw_latent_shape[1]
        self.latent_shape = (self.raw_latent_shape[0], t) + self.raw_latent_shape[2:]

    # ---------------------------------------------------------------- indices (pure functions of step)

    @functools.lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> np.ndarray:
        seed = [self.cfg.seed, epoch] if self.cfg.reshuffle_each_epoch else self.cfg.seed
        return np.random.default_rng(seed).permutation(self.num_samples)

    def global_sample_indices(self, step: int) -> np.ndarray:
        """Dataset indices of the whole global batch of `step` (all processes)."""
        epoch, j = divmod(int(step), self.steps_per_epoch)
        g = self.cfg.global_batch_size
        return self._permutation(epoch if self.cfg.reshuffle_each_epoch else 0)[j * g:(j + 1) * g]

    def local_sample_indices(self, step: int) -> np.ndarray:
        b = self.local_batch_size
        return self.global_sample_indices(step)[self.process_index * b:(self.process_index + 1) * b]

    def cfg_dropped(self, index: int) -> bool:
        rate = self.cfg.training_cfg_rate
        return rate > 0 and random.Random(self.cfg.seed ^ int(index)).random() < rate

    # ---------------------------------------------------------------- loading

    def load_sample(self, index: int) -> dict:
        raw: RawSample = self.source[int(index)]
        check_sample_shapes(raw.latents, raw.text_embeds, raw.where, self._latent_key, self._text_key,
                            self.cfg.latent_channels)
        if raw.text_embeds.shape[1] != self.text_dim:
            raise UserError(raw.where, self._text_key, f"text dim {raw.text_embeds.shape[1]} differs from the "
                                                       f"dataset's {self.text_dim}")
        if not self.has_latents:   # FastVideo: no latents read; zeros give the shape
            latents = np.zeros(self.latent_shape, np.float32)
        else:
            if raw.latents.shape != self.raw_latent_shape:
                raise UserError(raw.where, self._latent_key, f"latent shape {list(raw.latents.shape)} differs from "
                                f"the dataset's {list(self.raw_latent_shape)}; a batch needs one shape")
            latents = np.asarray(raw.latents[:, :self.latent_shape[1]], np.float32)
            if self.cfg.latents_mean is not None:
                latents = (latents - self._mean) / self._std
        n = min(raw.text_embeds.shape[0], self.cfg.text_len)
        text = np.zeros((self.cfg.text_len, self.text_dim), np.float32)
        mask = np.zeros((self.cfg.text_len,), np.int32)
        mask[:n] = 1
        if not self.cfg_dropped(index):
            text[:n] = raw.text_embeds[:n]
        return {"latents": np.ascontiguousarray(latents, np.float32), "text_embeds": text, "text_mask": mask}

    def batch(self, step: int) -> dict:
        """This process's batch of `step`: a pure function of step."""
        samples = [self.load_sample(i) for i in self.local_sample_indices(step)]
        return {k: np.stack([s[k] for s in samples]) for k in ("latents", "text_embeds", "text_mask")}

    # ---------------------------------------------------------------- grain pipeline and iterator

    def grain_dataset(self, start_step: int = 0, num_steps: int | None = None) -> grain.MapDataset:
        """Batches start_step, start_step + 1, ... as a grain MapDataset (element k = batch start_step + k)."""
        stop = start_step + (num_steps if num_steps is not None else _ENDLESS_STEPS)
        return grain.MapDataset.range(start_step, stop).map(self.batch)

    def iterator(self, start_step: int = 0) -> "DataIterator":
        return DataIterator(self, start_step)

    def state(self, next_step: int) -> dict:
        return {"next_step": int(next_step), "seed": self.cfg.seed, "global_batch_size": self.cfg.global_batch_size,
                "process_count": self.process_count, "reshuffle_each_epoch": self.cfg.reshuffle_each_epoch,
                "source": self.source.fingerprint}


class DataIterator(Iterator[dict]):
    """Prefetching iterator over batches; `get_state()` / `set_state()` are JSON-able and exact."""

    def __init__(self, data: TrainData, start_step: int = 0):
        self.data = data
        self._start(start_step)

    def _start(self, step: int) -> None:
        self.next_step = int(step)
        options = grain.ReadOptions(num_threads=self.data.cfg.num_threads,
                                    prefetch_buffer_size=self.data.cfg.prefetch_batches)
        self._it = iter(self.data.grain_dataset(step).to_iter_dataset(options))

    def __next__(self) -> dict:
        batch = next(self._it)
        self.next_step += 1
        return batch

    def get_state(self) -> dict:
        return self.data.state(self.next_step)

    def set_state(self, state: dict, where: object = "checkpoint") -> None:
        expected = self.data.state(state.get("next_step", 0))
        for key, value in expected.items():
            # The process count only decides which slice of each global batch a process loads: a run may
            # resume on another number of hosts.
            if key != "process_count" and state.get(key) != value:
                raise UserError(where, f"data.{key}", f"the checkpoint's data state has {state.get(key)!r} but this run "
                                                      f"has {value!r}; resume with the same dataset, seed and global "
                                                      "batch size")
        self._start(state["next_step"])

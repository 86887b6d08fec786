"""The output directory of `python -m fvjax.preprocess`: an fvjax dataset that grows shard by shard, plus
what a resumed run needs.

    OUT/manifest.json        the fvjax dataset manifest (fvjax/data/fvjax_format.py), rewritten atomically
                             after each shard: it lists complete shards only, so OUT is a valid dataset
                             at every moment once the first shard exists, whenever the run is killed
    OUT/shard-NNNNN.*        shards in fvjax's format (.latents.npy, .text.npy, .text_offsets.npy, .meta.jsonl)
    OUT/preprocess.json      the settings of the first run (a resumed run must use the same ones, and the
                             same --parquet once a run gave one)
    OUT/skipped.jsonl        one {"id", "path", "reason"} line per video that was skipped
    OUT/.pending/*.npz       encoded videos waiting for the next shard (one file each, written atomically)
    PARQUET/data-chunk-NNNNN.parquet   with --parquet: the same shards in FastVideo's t2v parquet schema

A video is finished when it is in a listed shard, in .pending, or in the skip log; a resumed run skips
finished videos. Every file is written under a temporary name and renamed. The manifest is the commit
point of a shard: a shard's files that the manifest does not list yet are rewritten, and its .pending
files are deleted only after the manifest lists it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fvjax.data.fvjax_format import FORMAT_NAME, VERSION
from fvjax.data.parquet_format import SCHEMA_T2V
from fvjax.errors import UserError

SETTINGS_FILE = "preprocess.json"
SKIP_LOG = "skipped.jsonl"
PENDING_DIR = ".pending"
_PARQUET_NAME = re.compile(r"data-chunk-(\d{5})\.parquet")
# What the latents are, for readers of the manifest (fvjax's reader ignores extra keys).
LATENTS_NOTE = "Wan VAE posterior mean, not normalised by latents_mean/std (as FastVideo stores them)"


class PreprocessStore:
    def __init__(self, out: str, settings: dict, samples_per_shard: int = 64, parquet_dir: str | None = None):
        self.out = Path(out)
        self.samples_per_shard = samples_per_shard
        self.parquet_dir = Path(parquet_dir) if parquet_dir else None
        self._open_settings(settings)
        self.shards: list[dict] = self._read_manifest()
        self.done: set[str] = set()
        for shard in self.shards:
            self.done.update(meta["id"] for meta in self._shard_meta(shard["name"]))
        self.skipped: dict[str, str] = self._read_skip_log()
        self.pending: dict[str, Path] = self._read_pending()
        self._remove_stale_temporaries()
        if self.parquet_dir is not None:
            self._sync_parquet()

    # --- queries -------------------------------------------------------------------------------------
    def finished(self, item_id: str) -> bool:
        return item_id in self.done or item_id in self.pending or item_id in self.skipped

    @property
    def num_samples(self) -> int:
        return len(self.done) + len(self.pending)

    # --- writes --------------------------------------------------------------------------------------
    def skip(self, item_id: str, path: str, reason: str) -> None:
        line = json.dumps({"id": item_id, "path": path, "reason": reason}, ensure_ascii=False) + "\n"
        with open(self.out / SKIP_LOG, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.skipped[item_id] = reason

    def add(self, meta: dict, latents: np.ndarray, text_embeds: np.ndarray) -> None:
        """One encoded video: meta needs "id" and "index" (input order); latents [C, T, h, w], text [L, D]."""
        item_id = meta["id"]
        target = self.out / PENDING_DIR / (hashlib.sha1(item_id.encode()).hexdigest()[:20] + ".npz")
        with _atomic_file(target) as f:
            np.savez(f, latents=np.asarray(latents, np.float32), text=np.asarray(text_embeds, np.float32),
                     meta=np.asarray(json.dumps(meta, ensure_ascii=False)))
        self.pending[item_id] = target
        if len(self.pending) >= self.samples_per_shard:
            self.flush()

    def flush(self) -> None:
        """Turn every pending video into shards (the last one may be smaller)."""
        records = sorted((self._load_pending(path) for path in self.pending.values()),
                         key=lambda r: (r[0]["index"], r[0]["id"]))
        for start in range(0, len(records), self.samples_per_shard):
            self._write_shard(records[start:start + self.samples_per_shard])

    # --- shards --------------------------------------------------------------------------------------
    def _write_shard(self, records: list[tuple[dict, np.ndarray, np.ndarray]]) -> None:
        name = f"shard-{len(self.shards):05d}"
        metas = [r[0] for r in records]
        latents = np.stack([r[1] for r in records])
        texts = [r[2] for r in records]
        if self.shards and list(latents.shape[1:]) != self._manifest["latent_shape"]:
            raise AssertionError(f"latent shape {latents.shape[1:]} differs from the dataset's")  # same settings
        offsets = np.concatenate([[0], np.cumsum([t.shape[0] for t in texts])]).astype(np.int64)
        for suffix, array in (("latents", latents), ("text", np.concatenate(texts, axis=0)),
                              ("text_offsets", offsets)):
            with _atomic_file(self.out / f"{name}.{suffix}.npy") as f:
                np.save(f, array)
        with _atomic_file(self.out / f"{name}.meta.jsonl") as f:
            f.write("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in metas).encode())
        self.shards.append({"name": name, "num_samples": len(records)})
        self._manifest = {"format": FORMAT_NAME, "version": VERSION,
                          "num_samples": sum(s["num_samples"] for s in self.shards),
                          "latent_shape": list(latents.shape[1:]), "text_dim": int(texts[0].shape[1]),
                          "shards": self.shards, "producer": "fvjax.preprocess", "latents": LATENTS_NOTE}
        with _atomic_file(self.out / "manifest.json") as f:   # the commit point
            f.write(json.dumps(self._manifest, indent=1).encode())
        if self.parquet_dir is not None:
            self._write_parquet(len(self.shards) - 1, metas, latents, texts)
        for meta in metas:
            self.done.add(meta["id"])
            self.pending.pop(meta["id"]).unlink()

    def _write_parquet(self, shard_index: int, metas: list[dict], latents: np.ndarray, texts: list[np.ndarray]) -> None:
        rows = []
        for meta, lat, txt in zip(metas, latents, texts):
            lat, txt = np.ascontiguousarray(lat, np.float32), np.ascontiguousarray(txt, np.float32)
            rows.append({
                "id": meta["id"], "vae_latent_bytes": lat.tobytes(), "vae_latent_shape": list(lat.shape),
                "vae_latent_dtype": "float32", "text_embedding_bytes": txt.tobytes(),
                "text_embedding_shape": list(txt.shape), "text_embedding_dtype": "float32",
                "file_name": os.path.basename(meta.get("path", "")), "caption": meta.get("caption", ""),
                "media_type": "video", "width": meta.get("width", 0), "height": meta.get("height", 0),
                "num_frames": meta.get("num_frames", 0),
                # FastVideo records the source video's fps and duration here.
                "fps": float(meta.get("source_fps") or 0.0),
                "duration_sec": float(meta.get("source_duration_sec") or 0.0)})
        table = pa.Table.from_pylist(rows, schema=SCHEMA_T2V)
        self.parquet_dir.mkdir(parents=True, exist_ok=True)
        with _atomic_file(self.parquet_dir / f"data-chunk-{shard_index:05d}.parquet") as f:
            pq.write_table(table, f, row_group_size=8)

    def _sync_parquet(self) -> None:
        """A run resumed with --parquet (or killed between a shard's commit and its parquet file) writes
        the parquet files the committed shards lack; anything else ending in .parquet there is refused."""
        if self.parquet_dir.exists():
            for path in self.parquet_dir.iterdir():
                match = _PARQUET_NAME.fullmatch(path.name)
                if path.name.endswith(".parquet") and (not match or int(match.group(1)) >= len(self.shards)):
                    raise UserError("--parquet", None, f"{self.parquet_dir} holds {path.name}, which is not a shard "
                                                       f"of {self.out}; give an empty or new directory")
        for i, shard in enumerate(self.shards):
            if not (self.parquet_dir / f"data-chunk-{i:05d}.parquet").exists():
                name = shard["name"]
                latents = np.load(self.out / f"{name}.latents.npy")
                text = np.load(self.out / f"{name}.text.npy")
                offsets = np.load(self.out / f"{name}.text_offsets.npy")
                texts = [text[offsets[j]:offsets[j + 1]] for j in range(len(offsets) - 1)]
                self._write_parquet(i, self._shard_meta(name), latents, texts)

    # --- reading back what earlier runs left ---------------------------------------------------------
    def _open_settings(self, settings: dict) -> None:
        settings_path = self.out / SETTINGS_FILE
        if settings_path.exists():
            try:
                previous = json.loads(settings_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise UserError(settings_path, None, f"cannot read the settings of the earlier run: {err}")
            for key, value in settings.items():
                if previous.get(key) != value:
                    raise UserError(f"--{key.replace('_', '-')}", None,
                                    f"{self.out} was preprocessed with {key} {previous.get(key)!r}, not {value!r}; "
                                    f"resume with the same value or write to a new --out directory")
            self._open_parquet_setting(previous, settings_path)
            return
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise UserError("--out", None, f"{self.out} exists and was not written by fvjax.preprocess (no "
                                           f"{SETTINGS_FILE}); choose a new directory")
        self.out.mkdir(parents=True, exist_ok=True)
        self._open_parquet_setting(dict(settings), settings_path)

    def _open_parquet_setting(self, settings: dict, settings_path: Path) -> None:
        """Once a run wrote parquet files, every later run must keep them complete (same --parquet);
        --parquet may be added on a resumed run (the earlier shards are converted)."""
        earlier = settings.get("parquet")
        ours = str(self.parquet_dir.resolve()) if self.parquet_dir is not None else None
        if earlier is not None and earlier != ours:
            raise UserError("--parquet", None, f"earlier runs into {self.out} wrote parquet files to {earlier}; "
                                               f"pass --parquet {earlier} to keep them complete")
        if settings_path.exists() and earlier == ours:
            return
        settings["parquet"] = ours
        with _atomic_file(settings_path) as f:
            f.write(json.dumps(settings, indent=1).encode())

    def _read_manifest(self) -> list[dict]:
        path = self.out / "manifest.json"
        if not path.exists():
            self._manifest = {}
            return []
        try:
            self._manifest = json.loads(path.read_text(encoding="utf-8"))
            return list(self._manifest["shards"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(path, None, f"cannot read the manifest of the earlier run: {err}")

    def _shard_meta(self, name: str) -> list[dict]:
        path = self.out / f"{name}.meta.jsonl"
        try:
            with open(path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(path, None, f"cannot read a shard of the earlier run: {err}")

    def _read_skip_log(self) -> dict[str, str]:
        skipped = {}
        path = self.out / SKIP_LOG
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a kill: that video is simply tried again
                    skipped[entry["id"]] = entry["reason"]
        return skipped

    def _read_pending(self) -> dict[str, Path]:
        pending = {}
        directory = self.out / PENDING_DIR
        directory.mkdir(exist_ok=True)
        for path in sorted(directory.glob("*.npz")):
            meta = self._load_pending(path)[0]
            if meta["id"] in self.done:   # killed after its shard was committed, before the clean-up
                path.unlink()
            else:
                pending[meta["id"]] = path
        return pending

    @staticmethod
    def _load_pending(path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"])), data["latents"], data["text"]

    def _remove_stale_temporaries(self) -> None:
        for directory in (self.out, self.out / PENDING_DIR, self.parquet_dir):
            if directory is not None and directory.exists():
                for path in directory.glob(".*.tmp-*"):
                    path.unlink()


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator:
    """A binary file handle on a hidden temporary sibling of `path`, renamed to `path` when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

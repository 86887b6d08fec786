"""Preprocess videos + captions into a training dataset: Wan VAE latents and UMT5 text embeddings.

    python -m fvjax.preprocess --model PATH --videos DIR_OR_JSON --out DIR [--parquet DIR2]
        [--height 480 --width 832 --num-frames 77 --fps 16] [--batch-size 1 --dtype float32] ...

Each video gives one clip: its first --num-frames frames resampled to --fps, scaled to cover
--height x --width and centre-cropped, pixels scaled to [-1, 1] (fvjax/preprocessing/clips.py). The clip
goes through the Wan VAE (stored: the posterior mean, not normalised, as FastVideo stores it) and its
caption through UMT5 (stored: the real tokens, padding removed). OUT is an fvjax dataset
(`training.data_path: OUT`); --parquet also writes FastVideo's t2v parquet files.

Resumable: rerunning the same command continues where a killed run stopped and skips finished videos;
OUT is a valid dataset of the finished shards at every moment (fvjax/preprocessing/store.py). A video
that cannot give a clip (unreadable, too short, missing, no caption) is skipped: one line on stderr
and one in OUT/skipped.jsonl; a rerun does not try it again.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import sys
import time
from typing import Iterable, Iterator, Sequence

from fvjax.errors import ArgumentParser, UserError, cli_entry

_DTYPES = ("float32", "bfloat16")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m fvjax.preprocess", description=__doc__.split("\n\n")[0],
        epilog="--videos layouts: FastVideo's videos2caption.json ([{\"path\", \"cap\"}], videos in videos/ "
               "beside it; give the file or its directory), FastVideo's videos.txt + prompt.txt, or a directory "
               "of videos with a same-named .txt caption beside each.")
    parser.add_argument("--model", required=True,
                        help="Diffusers Wan pipeline: a directory with vae/, text_encoder/ and tokenizer/, or a hub "
                             "id already in the local Hugging Face cache")
    parser.add_argument("--family", default="wan", help="the model family whose VAE and text encoder encode "
                        "(default wan)")
    parser.add_argument("--videos", required=True, help="videos2caption.json, or a directory (see below)")
    parser.add_argument("--out", required=True,
                        help="dataset directory to create, or to resume (it records the settings of its first run)")
    parser.add_argument("--parquet", default=None, metavar="DIR",
                        help="also write the shards as FastVideo t2v parquet files into DIR")
    parser.add_argument("--height", type=int, default=480, help="clip height, a multiple of 16 (default 480)")
    parser.add_argument("--width", type=int, default=832, help="clip width, a multiple of 16 (default 832)")
    parser.add_argument("--num-frames", type=int, default=77,
                        help="frames per clip, 1 + 4k (default 77: 20 latent frames)")
    parser.add_argument("--fps", type=float, default=16,
                        help="frame rate the clip is resampled to (FastVideo's train_fps; default 16)")
    parser.add_argument("--batch-size", type=int, default=1, help="clips encoded together (default 1)")
    parser.add_argument("--dtype", default="float32", choices=_DTYPES,
                        help="parameter and compute dtype of the VAE and the text encoder (stored data is float32)")
    parser.add_argument("--text-max-length", type=int, default=512,
                        help="tokens the caption is padded/truncated to before encoding (Wan: 512)")
    parser.add_argument("--seed", type=int, default=42,
                        help="picks one caption when an entry lists several (default 42)")
    parser.add_argument("--samples-per-shard", type=int, default=64, help="videos per dataset shard (default 64)")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads decoding videos ahead of the encoder (default 2)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    from fvjax.preprocessing.clips import ClipSpec, check_spec

    check_spec(ClipSpec(args.height, args.width, args.num_frames, args.fps))
    for flag, value in (("--batch-size", args.batch_size), ("--text-max-length", args.text_max_length),
                        ("--samples-per-shard", args.samples_per_shard), ("--workers", args.workers)):
        if value < 1:
            raise UserError(flag, None, f"must be at least 1, got {value}")
    from fvjax.weights.paths import looks_like_hub_id

    if not os.path.exists(args.model) and not looks_like_hub_id(args.model):
        raise UserError("--model", None, f"{args.model} does not exist; give a Diffusers Wan pipeline directory "
                                         f"(vae/, text_encoder/, tokenizer/) or a hub id such as "
                                         f"Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    if not os.path.exists(args.videos):
        raise UserError("--videos", None, f"{args.videos} does not exist")
    for flag, path in (("--out", args.out), ("--parquet", args.parquet)):
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise UserError(flag, None, f"{path} is a file; give a directory")
    if args.parquet and os.path.abspath(args.parquet) == os.path.abspath(args.out):
        raise UserError("--parquet", None, "must differ from --out (a directory with both formats is ambiguous)")


def settings_of(args: argparse.Namespace) -> dict:
    """What decides the bytes of a sample: a resumed run must repeat it exactly."""
    model = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
    return {"model": model, "height": args.height, "width": args.width, "num_frames": args.num_frames,
            "fps": args.fps, "dtype": args.dtype, "text_max_length": args.text_max_length, "seed": args.seed}


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    from fvjax.cpu_tuning import retain_freed_host_memory
    retain_freed_host_memory()   # before JAX starts its CPU client (see fvjax/cpu_tuning.py)

    from tqdm import tqdm

    from fvjax.preprocessing.clips import ClipSpec, SkipVideo, load_clip
    from fvjax.preprocessing.inputs import list_inputs, pick_caption
    from fvjax.preprocessing.store import SKIP_LOG, PreprocessStore

    spec = ClipSpec(args.height, args.width, args.num_frames, args.fps)
    items = list_inputs(args.videos)
    store = PreprocessStore(args.out, settings_of(args), args.samples_per_shard, args.parquet)
    skip_log = os.path.join(args.out, SKIP_LOG)
    earlier = sum(store.finished(item.id) for item in items)
    skipped_before = len(store.skipped)

    def skip(item, reason: str) -> None:
        store.skip(item.id, item.path, reason)
        tqdm.write(f"fvjax: skipped {item.path}: {reason}", file=sys.stderr)

    todo = []
    for item in items:
        if store.finished(item.id):
            continue
        if item.problem:
            skip(item, item.problem)
        else:
            todo.append(item)

    encoded = 0
    if todo:
        encoder = _load_encoder(args)
        started = time.monotonic()
        progress = tqdm(total=len(todo), desc="preprocess", unit="video", file=sys.stderr, dynamic_ncols=True)
        batch: list = []

        def encode(batch) -> None:
            latents = encoder.latents([clip.frames for _, clip in batch])
            texts = encoder.text([pick_caption(item, args.seed) for item, _ in batch])
            for (item, clip), lat, txt in zip(batch, latents, texts):
                store.add(_meta(item, clip, spec, pick_caption(item, args.seed)), lat, txt)
            progress.update(len(batch))

        for item, result in _prefetch(lambda it: load_clip(it.path, spec), todo, args.workers,
                                      lookahead=args.batch_size + 2 * args.workers):
            if isinstance(result, SkipVideo):
                skip(item, str(result))
                progress.update(1)
                continue
            batch.append((item, result))
            if len(batch) == args.batch_size:
                encode(batch)
                encoded += len(batch)
                batch = []
        if batch:
            encode(batch)
            encoded += len(batch)
        progress.close()
        rate = encoded / max(time.monotonic() - started, 1e-9)
        print(f"encoded {encoded} videos ({rate:.2f} videos/s)", file=sys.stderr)
    store.flush()

    skipped_now = len(store.skipped) - skipped_before
    if store.num_samples == 0:
        raise UserError("--videos", None, f"no video could be preprocessed ({len(store.skipped)} skipped; the "
                                          f"reasons are in {skip_log})")
    where = args.out + (f" and {args.parquet} (parquet)" if args.parquet else "")
    print(f"dataset {where}: {store.num_samples} samples ({encoded} new, {earlier} of {len(items)} inputs "
          f"finished by earlier runs); {len(store.skipped)} skipped ({skipped_now} in this run; reasons in {skip_log})")
    return 0


def _load_encoder(args):
    import jax.numpy as jnp

    from fvjax.families.registry import get_family
    from fvjax.preprocessing.encode import ClipEncoder
    return ClipEncoder(args.model, jnp.dtype(args.dtype), args.batch_size, args.text_max_length,
                       get_family(args.family, "command line", "--family"))


def _meta(item, clip, spec, caption: str) -> dict:
    return {"id": item.id, "index": item.index, "caption": caption, "path": item.path,
            "height": spec.height, "width": spec.width, "num_frames": spec.num_frames, "fps": spec.fps,
            "source_fps": clip.source_fps, "source_height": clip.source_size[0],
            "source_width": clip.source_size[1], "source_duration_sec": clip.source_duration_sec}


def _prefetch(load, items: Iterable, workers: int, lookahead: int) -> Iterator[tuple[object, object]]:
    """(item, load(item) or the SkipVideo it raised), in input order, with up to `lookahead` loads running
    ahead in `workers` threads (FFmpeg decodes outside the GIL) while the caller encodes."""
    from fvjax.preprocessing.clips import SkipVideo

    def guarded(item):
        try:
            return load(item)
        except SkipVideo as skip:
            return skip

    queue: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for item in items:
            queue.append((item, pool.submit(guarded, item)))
            if len(queue) >= lookahead:
                head, future = queue.popleft()
                yield head, future.result()
        while queue:
            head, future = queue.popleft()
            yield head, future.result()


if __name__ == "__main__":
    main()

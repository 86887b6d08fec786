"""What checkpoint checksums cost: save and restore time of a realistic training checkpoint with and without
them (fvjax.training.checkpoint.Checkpointer, fvjax.io.checksums).

    python benchmarks/checksum_cost.py                 # ~400 MB checkpoint, 3 rounds
    python benchmarks/checksum_cost.py --mb 1000 --rounds 5

The state is a student role as the trainer saves it: fp32 params (a stack of transformer-like blocks and a
few small leaves) with AdamW's two moments and an EMA copy, i.e. 4x the params, random values (weights do
not compress). Each round saves it into a fresh directory as the trainer does (async) and restores it onto
the device with a target, once with checksums (the default: the list is computed when the save finalizes,
verified before restoring) and once without, alternating so that load from other processes hits both.

Timed: the save's blocking part (what the training loop waits for: the copy to host memory), the save until
finalized (save + wait_until_finished: background write, and with checksums the list), a restore from the
page cache (the files were just written) and a cold restore (the checkpoint's pages evicted first with
posix_fadvise DONTNEED: a resume in a fresh process). Prints medians of wall and process CPU time, and the
ratios.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fvjax.io import checksums  # noqa: E402
from fvjax.training.checkpoint import Checkpointer  # noqa: E402


def make_state(total_mb: float, seed: int = 0) -> dict:
    """params / opt_state (mu, nu) / ema, each a quarter of `total_mb`."""
    rng = np.random.default_rng(seed)
    per_copy = int(total_mb * 2**20 / 4 / 4)   # fp32 elements in each of the 4 copies
    dim = 1024
    layers = max(1, per_copy // (dim * dim * 4))
    shapes = {"blocks": {"attn_qkv": (layers, dim, 3 * dim), "ffn_out": (layers, dim, dim)},
              "proj_out": (dim, 64), "norm": (dim,)}

    def copy():
        return jax.tree.map(lambda s: jax.device_put(rng.standard_normal(s, dtype=np.float32)), shapes,
                            is_leaf=lambda x: isinstance(x, tuple))

    return {"student": {"params": copy(), "opt_state": {"mu": copy(), "nu": copy(),
                                                         "count": jax.device_put(np.int32(7))},
                        "ema": copy(), "step": jax.device_put(np.int32(7))}}


def evict(directory: str) -> None:
    """Drop `directory`'s files from the page cache (written back first), so the next read is from disk."""
    for dirpath, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def one_round(state, abstract, root: str, checksum: bool) -> dict[str, tuple[float, float]]:
    shutil.rmtree(root, ignore_errors=True)
    out = {}
    ckpt = Checkpointer(root, checksum=checksum)
    with Clock() as total:
        with Clock() as blocking:
            ckpt.save(1, state, data_state={"next_step": 2})
        ckpt.wait_until_finished()
    ckpt.close()
    out["save, blocking part"] = (blocking.wall, blocking.cpu)
    out["save until finalized"] = (total.wall, total.cpu)
    assert checksums.has_list(os.path.join(root, "1")) == checksum
    for label in ("restore, page cache", "restore, cold"):
        if label.endswith("cold"):
            evict(root)
        with Clock() as clock:
            restored = Checkpointer(root, read_only=True).restore(1, abstract, verify=checksum)
            jax.block_until_ready(restored.state)
        out[label] = (clock.wall, clock.cpu)
        del restored
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=400, help="checkpoint size in MB (params + AdamW + EMA)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()

    state = make_state(args.mb)
    size = sum(x.nbytes for x in jax.tree.leaves(state))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    work = tempfile.mkdtemp(prefix="fvjax-checksum-bench-", dir=args.dir)
    times: dict[bool, list[dict]] = {True: [], False: []}
    try:
        one_round(state, abstract, os.path.join(work, "warm"), True)   # first-time costs (imports, compiles)
        for r in range(args.rounds):
            for checksum in ((True, False) if r % 2 == 0 else (False, True)):
                times[checksum].append(one_round(state, abstract, os.path.join(work, f"r{r}{checksum}"), checksum))
        listed = os.path.join(work, "r0True", "1")
        with Clock() as alone:
            checksums.verify(listed)
        files = sum(len(f) for _, _, f in os.walk(listed))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"checkpoint: {size / 1e6:.0f} MB in {len(jax.tree.leaves(state))} arrays, {files} files; {args.rounds} "
          f"rounds, medians; {os.cpu_count()} CPUs, up to {checksums._THREADS} checksum threads")
    print(f"verify alone (page cache): {alone.wall:.3f} s wall = {size / 1e9 / alone.wall:.2f} GB/s, "
          f"{alone.cpu:.3f} s CPU")
    print(f"{'':22s} {'without':>9s} {'with':>9s} {'ratio':>7s}   {'CPU without':>11s} {'with':>9s} {'ratio':>7s}")
    for label in times[True][0]:
        off = [statistics.median(t[label][i] for t in times[False]) for i in (0, 1)]
        on = [statistics.median(t[label][i] for t in times[True]) for i in (0, 1)]
        print(f"{label:22s} {off[0]:8.3f}s {on[0]:8.3f}s {on[0] / off[0]:7.3f}   {off[1]:10.3f}s {on[1]:8.3f}s "
              f"{on[1] / off[1]:7.3f}")


if __name__ == "__main__":
    main()

"""Where the CPU forward's gap to PyTorch is (bench_dit_forward_cpu.py): the attention and the Dense matmuls of
one Wan2.1-1.3B-width layer, fvjax's "xla" attention backend (on the CPU at these sizes one head at a time,
fvjax/models/attention_per_head.py) against PyTorch's CPU SDPA, and the pieces of the batched form (scores
product, softmax, values product, all heads at once) with a query-blocked variant.

    JAX_PLATFORMS=cpu python benchmarks/attention_cpu_pieces.py [--tokens 1280] [--text-len 512]

Medians of 7 calls after a warm-up, fp32, batch 1, 12 heads x 128, both sides on the default threads.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def median_seconds(fn, iters: int = 7) -> float:
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1280)
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument("--query-block", type=int, default=256)
    args = p.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from fvjax.models.attention import attention

    heads, head_dim, lq = 12, 128, args.tokens
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, lq, heads, head_dim), dtype=np.float32) for _ in range(3))
    text = rng.standard_normal((1, args.text_len, heads, head_dim), dtype=np.float32)
    as_torch = lambda a: torch.from_numpy(a).transpose(1, 2).contiguous()  # noqa: E731  [B, H, L, D]
    fvjax_attention = jax.jit(lambda q, k, v: attention(q, k, v, backend="xla"))
    rows = []
    for name, keys in (("self-attention", k), ("cross-attention", text)):
        jq, jk = jnp.asarray(q), jnp.asarray(keys)
        tq, tk = as_torch(q), as_torch(keys)
        rows.append((name, median_seconds(lambda: fvjax_attention(jq, jk, jk).block_until_ready()),
                     median_seconds(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tk))))
    for m, kk, n in ((lq, 1536, 1536), (lq, 1536, 8960), (lq, 8960, 1536), (args.text_len, 4096, 1536)):
        a, b = rng.standard_normal((m, kk), dtype=np.float32), rng.standard_normal((kk, n), dtype=np.float32)
        ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
        product = jax.jit(jnp.matmul)
        rows.append((f"matmul {m}x{kk}x{n}", median_seconds(lambda: product(ja, jb).block_until_ready()),
                     median_seconds(lambda: ta @ tb)))
    for name, fvjax_s, torch_s in rows:
        print(f"{name:28s} fvjax {fvjax_s:.4f} s  torch {torch_s:.4f} s  ratio {fvjax_s / torch_s:.2f}")

    bh, scale = heads, 1.0 / math.sqrt(head_dim)
    hq, hk = (jnp.asarray(a[0].transpose(1, 0, 2)) for a in (q, k))          # [H, L, D]
    scores = jax.jit(lambda q, k: jnp.einsum("bqd,bkd->bqk", q, k))
    softmax = jax.jit(lambda x: jax.nn.softmax(x, axis=-1))
    values = jax.jit(lambda p, v: jnp.einsum("bqk,bkd->bqd", p, v))
    logits = scores(hq, hk)
    probs = softmax(logits)
    print(f"xla pieces: scores {median_seconds(lambda: scores(hq, hk).block_until_ready()):.4f} s, softmax "
          f"{median_seconds(lambda: softmax(logits).block_until_ready()):.4f} s, values "
          f"{median_seconds(lambda: values(probs, hk).block_until_ready()):.4f} s")

    block = args.query_block

    def query_blocked(q, k, v):
        blocks = q.reshape(bh, lq // block, block, head_dim).transpose(1, 0, 2, 3)

        def one(qb):
            return jnp.einsum("bqk,bkd->bqd", jax.nn.softmax(jnp.einsum("bqd,bkd->bqk", qb, k) * scale, -1), v)
        return jax.lax.map(one, blocks).transpose(1, 0, 2, 3).reshape(bh, lq, head_dim)

    whole = jax.jit(lambda q, k, v: jnp.einsum("bqk,bkd->bqd", jax.nn.softmax(
        jnp.einsum("bqd,bkd->bqk", q, k) * scale, -1), v))
    blocked = jax.jit(query_blocked)
    print(f"self-attention whole {median_seconds(lambda: whole(hq, hk, hk).block_until_ready()):.4f} s, "
          f"query blocks of {block} {median_seconds(lambda: blocked(hq, hk, hk).block_until_ready()):.4f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

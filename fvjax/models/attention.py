"""Scaled dot-product attention behind one function, with per-platform backends.

    attention(q, k, v, *, backend="auto", kv_mask=None) -> [B, Lq, H, D]

q [B, Lq, H, D], k/v [B, Lk, H, D] (the BTNH layout of `jax.nn.dot_product_attention`); not causal,
scale 1/sqrt(D) — what Wan uses for both self- and cross-attention. `kv_mask` ([Lk] or [B, Lk] bool,
optional) drops keys for every query (the causal Wan's KV cache: empty or out-of-window slots); every
query must keep at least one key. Backends:

- "xla": plain einsums; logits, softmax and both accumulations in fp32, whatever the input dtype
  (the CPU default and the fallback everywhere). On the CPU, from 512 x 512 scores per head, one head
  at a time (fvjax/models/attention_per_head.py: twice as fast there, FlashAttention's backward).
- "cudnn": cuDNN flash attention through `jax.nn.dot_product_attention(implementation="cudnn")`
  (GPU; bf16/fp16 inputs only, head_dim <= 128 and a multiple of 8).
- "splash": the Pallas TPU splash-attention kernel. Sequences are padded to the kernel's block sizes
  (padded keys masked with segment ids), head_dim padded to a multiple of 128, the scale folded into q.
  When sharding rules are active (`fvjax.sharding.use_rules`) it runs under `shard_map`: q keeps its
  batch / sequence / head sharding, k and v are gathered along the sequence. Off TPU the kernel runs
  in Pallas interpret mode (slow, for tests only).
- "auto": splash on TPU, cuDNN on GPU when the dtype allows, else xla — the platform being the target's
  (fvjax/models/platform.py: the active mesh's devices), not the host's.

On the CPU the tests check "splash" (interpreted, also under shard_map) against "xla". "cudnn" was checked
on an H200 (benchmarks/bench_dit_accelerator.py: outputs and gradients within bf16 rounding of "xla";
1.3B fwd+bwd at 8190 tokens as fast as PyTorch's SDPA); the compiled splash kernel still needs a TPU.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fvjax.models import matmuls
from fvjax.models.attention_per_head import per_head_attention
from fvjax.models.platform import target_platform
from fvjax.sharding.logical import active_rules, logical_to_spec

BACKENDS = ("auto", "xla", "cudnn", "splash")

# Logical names of attention activations (see interfaces: ("act_batch", "act_seq", "act_heads", "act_head_dim")).
Q_AXES = ("act_batch", "act_seq", "act_heads", "act_head_dim")
KV_AXES = ("act_batch", None, "act_heads", "act_head_dim")


def resolve_backend(backend: str, dtype, head_dim: int) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    platform = target_platform()
    if platform == "tpu":
        return "splash"
    if platform in ("gpu", "cuda", "rocm") and _cudnn_supports(dtype, head_dim):
        return "cudnn"
    return "xla"


def _cudnn_supports(dtype, head_dim: int) -> bool:
    return jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) and head_dim <= 128 \
        and head_dim % 8 == 0


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, backend: str = "auto",
              kv_mask: jax.Array | None = None) -> jax.Array:
    chosen = resolve_backend(backend, q.dtype, q.shape[-1])
    if kv_mask is not None:
        kv_mask = jnp.broadcast_to(kv_mask, (q.shape[0], k.shape[1]))
    if chosen == "xla":
        return xla_attention(q, k, v, kv_mask)
    if chosen == "cudnn":
        if not _cudnn_supports(q.dtype, q.shape[-1]):
            raise ValueError(f"cudnn attention needs bf16/fp16 inputs and head_dim <= 128 (multiple of 8); "
                             f"got {q.dtype}, head_dim {q.shape[-1]}; use backend 'xla' or compute in bf16")
        # cuDNN takes a key mask only as a [B, 1, Lq, Lk] bias (jax turns the boolean mask into one)
        mask = None if kv_mask is None else \
            jnp.broadcast_to(kv_mask[:, None, None, :], (q.shape[0], 1, q.shape[1], k.shape[1]))
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
    # Off TPU the Pallas kernel runs in interpret mode (slow; lets CPU tests check its numerics).
    return splash_attention(q, k, v, interpret=target_platform() != "tpu", kv_mask=kv_mask)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_mask: jax.Array | None = None) -> jax.Array:
    b, lq, h, d = q.shape

    def heads_major(x):  # [B, L, H, D] -> [B*H, L, D]: one leading batch dim keeps XLA:CPU's batched
        return jnp.transpose(x, (0, 2, 1, 3)).reshape(b * h, x.shape[1], d)  # matmuls fast (1.7x fwd+bwd)

    keep = None if kv_mask is None else jnp.repeat(kv_mask, h, axis=0)       # [B*H, Lk]
    attend = per_head_attention if _per_head_pays(lq, k.shape[1]) else _batched_attention
    out = attend(heads_major(q), heads_major(k), heads_major(v), keep)
    return jnp.transpose(out.reshape(b, h, lq, d), (0, 2, 1, 3)).astype(q.dtype)


# Scores per head from which one head at a time beats the batched products on XLA:CPU (measured:
# 512 x 512 at Wan widths 0.55x the time, 1280 x 1280 0.50x; 256 x 256 1.9x, 1280 x 128 1.3x).
PER_HEAD_MIN_SCORES = 512 * 512


def _per_head_pays(lq: int, lk: int) -> bool:
    if lq * lk < PER_HEAD_MIN_SCORES or target_platform() != "cpu":
        return False
    active = active_rules()   # a loop over heads would gather a sharded head axis every iteration
    return active is None or active[0].size == 1


def _batched_attention(q: jax.Array, k: jax.Array, v: jax.Array, keep: jax.Array | None) -> jax.Array:
    """q [N, Lq, D], k/v [N, Lk, D] -> [N, Lq, D] fp32, all heads in each product."""
    logits = matmuls.scores(q, k) * (1.0 / math.sqrt(q.shape[-1]))
    if keep is not None:
        logits = jnp.where(keep[:, None, :], logits, jnp.finfo(logits.dtype).min)
    probs = jax.nn.softmax(logits, axis=-1)
    # fvjax/models/matmuls.py: on the CPU with a backward XLA:CPU runs on YNNPACK
    return matmuls.weighted_values(probs.astype(v.dtype), v)


# ---------------------------------------------------------------------------------------------------
# TPU splash attention

def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _block(length: int, preferred: int = 512) -> int:
    return min(preferred, _round_up(length, 128))


def _splash_local(q: jax.Array, k: jax.Array, v: jax.Array, interpret: bool = False,
                  kv_mask: jax.Array | None = None) -> jax.Array:
    """Splash on one shard's arrays [B, L, H, D] (q already holds this shard's query rows)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    b, lq, h, d = q.shape
    lk = k.shape[1]
    bq, bkv = _block(lq), _block(lk)
    lq_pad, lk_pad, d_pad = _round_up(lq, bq), _round_up(lk, bkv), _round_up(d, 128)
    q = q * jnp.asarray(1.0 / math.sqrt(d), q.dtype)  # splash does not scale the logits

    def to_kernel_layout(x, length):
        x = jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, d_pad - d)))
        return jnp.transpose(x, (0, 2, 1, 3))  # [B, H, L, D]

    qk, kk, vk = to_kernel_layout(q, lq_pad), to_kernel_layout(k, lk_pad), to_kernel_layout(v, lk_pad)
    keep = jnp.broadcast_to(jnp.arange(lk_pad) < lk, (b, lk_pad))
    if kv_mask is not None:
        keep = keep & jnp.pad(kv_mask, ((0, 0), (0, lk_pad - lk)))
    segment_ids = sk.SegmentIds(q=jnp.zeros((b, lq_pad), jnp.int32), kv=jnp.where(keep, 0, 1).astype(jnp.int32))
    block_sizes = sk.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv,
                                block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
                                block_q_dq=bq, block_kv_dq=bkv)
    mask = sm.MultiHeadMask([sm.FullMask((lq_pad, lk_pad)) for _ in range(h)])
    kernel = sk.make_splash_mha(mask=mask, block_sizes=block_sizes, head_shards=1, q_seq_shards=1,
                                interpret=interpret)
    out = jax.vmap(kernel)(qk, kk, vk, segment_ids)
    return jnp.transpose(out, (0, 2, 1, 3))[:, :lq, :, :d].astype(q.dtype)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, interpret: bool = False,
                     kv_mask: jax.Array | None = None) -> jax.Array:
    active = active_rules()
    if active is None:
        return _splash_local(q, k, v, interpret, kv_mask)
    mesh, rules = active
    q_spec = logical_to_spec(Q_AXES, rules, mesh)
    kv_spec = logical_to_spec(KV_AXES, rules, mesh)
    if kv_mask is None:
        body = lambda q_, k_, v_: _splash_local(q_, k_, v_, interpret)  # noqa: E731
        return jax.shard_map(body, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                             check_vma=False)(q, k, v)
    mask_spec = jax.sharding.PartitionSpec(q_spec[0], None)
    body = lambda q_, k_, v_, m_: _splash_local(q_, k_, v_, interpret, m_)  # noqa: E731
    return jax.shard_map(body, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, mask_spec), out_specs=q_spec,
                         check_vma=False)(q, k, v, kv_mask)

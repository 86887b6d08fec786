"""Attention one head at a time, for XLA:CPU at video sizes.

    per_head_attention(q, k, v, keep=None) -> [N, Lq, D]     q [N, Lq, D], k/v [N, Lk, D], keep [N, Lk] bool

N is batch x heads. XLA:CPU hands the batched attention (scores, softmax, values) to one YNNPACK fusion
that runs at about half the speed of the same products done head by head: at Wan2.1-1.3B widths and
1,280 tokens the batched form takes 0.10 s, this one 0.06 s (benchmarks/attention_cpu_pieces.py; most of
the difference between fvjax's DiT forward and Diffusers' on the CPU). Below ~512 x 512 scores per head the
batched form is faster (the loop's per-head overhead), so `xla_attention` picks this only above that.

The softmax is taken in base 2 (the logits scaled by log2(e) too; exp2 is cheaper than exp) and
normalised after the values product (an [Lq, D] division instead of an [Lq, Lk] one). The backward
is FlashAttention's: it keeps q, k, v, the output and each row's log-sum-exp, not the [Lq, Lk]
probabilities, and recomputes them head by head. Logits and both accumulations are fp32, whatever the
input dtype, as in the batched form.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_LOG2_E = 1.4426950408889634


def _t(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


def _logits_base2(q: jax.Array, k: jax.Array, keep: jax.Array | None) -> jax.Array:
    """log2-scaled logits of one head, [Lq, Lk] fp32; dropped keys at the fp32 minimum."""
    scale = _LOG2_E / math.sqrt(q.shape[-1])
    logits = jnp.dot(q, _t(k), preferred_element_type=jnp.float32) * scale
    if keep is not None:
        logits = jnp.where(keep[None, :], logits, jnp.finfo(jnp.float32).min)
    return logits


def _one_head_forward(q, k, v, keep):
    logits = _logits_base2(q, k, keep)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    unnormalised = jnp.exp2(logits - row_max)
    row_sum = jnp.sum(unnormalised, axis=-1, keepdims=True)
    out = jnp.dot(unnormalised.astype(v.dtype), v, preferred_element_type=jnp.float32) / row_sum
    return out, (row_max + jnp.log2(row_sum))[:, 0]


def _one_head_backward(q, k, v, keep, out, log2_sum_exp, d_out):
    """Gradients of one head from its recomputed probabilities (FlashAttention's backward)."""
    probs = jnp.exp2(_logits_base2(q, k, keep) - log2_sum_exp[:, None])
    d_out32 = d_out.astype(jnp.float32)
    d_probs = jnp.dot(d_out32, _t(v).astype(jnp.float32), preferred_element_type=jnp.float32)
    row_dot = jnp.sum(d_out32 * out, axis=-1, keepdims=True)
    d_logits = probs * (d_probs - row_dot) / math.sqrt(q.shape[-1])     # w.r.t. the natural-log logits
    dq = jnp.dot(d_logits, k.astype(jnp.float32))
    # weight-style products as (A^T B)^T with A^T materialised: XLA:CPU has no fast transposed left
    # operand (fvjax/models/matmuls.py)
    dk = _t(jax.lax.optimization_barrier(_t(q.astype(jnp.float32))) @ d_logits)
    dv = _t(jax.lax.optimization_barrier(_t(d_out32)) @ probs)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


def _forward(q, k, v, keep):
    return jax.lax.map(lambda head: _one_head_forward(*head), (q, k, v, keep))   # keep None: no mask


@jax.custom_vjp
def _attention(q, k, v, keep):
    return _forward(q, k, v, keep)[0].astype(q.dtype)


def _attention_fwd(q, k, v, keep):
    out, log2_sum_exp = _forward(q, k, v, keep)
    return out.astype(q.dtype), (q, k, v, keep, out, log2_sum_exp)


def _attention_bwd(residuals, d_out):
    q, k, v, keep, out, log2_sum_exp = residuals
    dq, dk, dv = jax.lax.map(lambda head: _one_head_backward(*head), (q, k, v, keep, out, log2_sum_exp, d_out))
    return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def per_head_attention(q: jax.Array, k: jax.Array, v: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    """Softmax attention of q [N, Lq, D] over k, v [N, Lk, D], one of the N heads at a time; `keep`
    [N, Lk] drops keys (False) for every query of that head."""
    return _attention(q, k, v, keep)

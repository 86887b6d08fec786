"""The DiT's matmuls (Dense, attention scores and values); on the CPU with backward passes laid out for
XLA:CPU (same values as autodiff's).

Autodiff writes a weight-style gradient (Dense: dW = x^T dy; attention: dK = dS^T Q, dV = P^T dO) as a
product contracting both operands' leading dim. XLA:CPU's YNNPACK matmuls take no transposed left
operand, so those products fall back to Eigen at about half the speed (30-45 GFLOP/s on one core for
the benchmark DiT's shapes, 22 with a 512-long power-of-two stride, vs 55-70 on YNNPACK). Here the
backward materialises the small transposed operand first and, where the product's output must be
transposed back, the output too; the optimization barriers keep XLA from folding those transposes
into the product again. A transpose costs a fraction of what it saves (benchmarks/README.md).

The custom VJPs are chosen when the target platform is the CPU (fvjax/models/platform.py: the active
mesh's devices, else the default backend; at trace time, like attention's "auto"); GPU and TPU
compilers choose operand layouts themselves and get plain autodiff. Remat
policies see through the custom VJPs (a "dots" policy still saves the products' outputs).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from fvjax.models.platform import target_platform


def _t(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


def _materialised(x: jax.Array) -> jax.Array:
    return jax.lax.optimization_barrier(x)


def _with_backward(forward: Callable, backward: Callable) -> Callable:
    """`forward(a, b)` with `backward((a, b), cotangent) -> (da, db)` as its VJP."""
    product = jax.custom_vjp(forward)
    product.defvjp(lambda a, b: (forward(a, b), (a, b)), backward)
    return product


def _matmul_backward(residuals, dy):
    x, kernel = residuals
    return jnp.dot(dy, kernel.T), jnp.dot(_materialised(x.T), dy)


def _scores_backward(residuals, d_logits):
    q, k = residuals
    dq = jnp.einsum("nqk,nkd->nqd", d_logits, k, preferred_element_type=jnp.float32)
    dk = _t(_materialised(_materialised(_t(q)) @ d_logits))          # (Q^T dS)^T
    return dq.astype(q.dtype), dk.astype(k.dtype)


def _weighted_values_backward(residuals, d_out):
    probs, v = residuals
    d_probs = jnp.einsum("nqd,nkd->nqk", d_out, v, preferred_element_type=jnp.float32)
    dv = _t(_materialised(_materialised(_t(d_out)) @ probs))        # (dO^T P)^T
    return d_probs.astype(probs.dtype), dv.astype(v.dtype)


def _plain_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.dot(x, kernel)


def _plain_scores(q: jax.Array, k: jax.Array) -> jax.Array:
    return jnp.einsum("nqd,nkd->nqk", q, k, preferred_element_type=jnp.float32)


def _plain_weighted_values(probs: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.einsum("nqk,nkd->nqd", probs, v, preferred_element_type=jnp.float32)


_CPU_MATMUL = _with_backward(_plain_matmul, _matmul_backward)
_CPU_SCORES = _with_backward(_plain_scores, _scores_backward)
_CPU_WEIGHTED_VALUES = _with_backward(_plain_weighted_values, _weighted_values_backward)


def _on_cpu() -> bool:
    return target_platform() == "cpu"


def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x [rows, in] @ kernel [in, out]."""
    return (_CPU_MATMUL if _on_cpu() else _plain_matmul)(x, kernel)


def scores(q: jax.Array, k: jax.Array) -> jax.Array:
    """q [N, Lq, D] . k [N, Lk, D] -> logits [N, Lq, Lk] in fp32."""
    return (_CPU_SCORES if _on_cpu() else _plain_scores)(q, k)


def weighted_values(probs: jax.Array, v: jax.Array) -> jax.Array:
    """probs [N, Lq, Lk] . v [N, Lk, D] -> [N, Lq, D] in fp32."""
    return (_CPU_WEIGHTED_VALUES if _on_cpu() else _plain_weighted_values)(probs, v)

"""The CPU's one-head-at-a-time attention (fvjax/models/attention_per_head.py) against PyTorch's SDPA and
autograd: values and gradients of q, k, v, with and without a key mask, and that `xla_attention` takes
it from PER_HEAD_MIN_SCORES on."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fvjax.models.attention import PER_HEAD_MIN_SCORES, xla_attention
from fvjax.models.attention_per_head import per_head_attention


def _inputs(lq, lk, heads=2, head_dim=16, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((batch, n, heads, head_dim), dtype=np.float32) for n in (lq, lk, lk))
    cotangent = rng.standard_normal((batch, lq, heads, head_dim), dtype=np.float32)
    return q, k, v, cotangent


def _torch_reference(q, k, v, cotangent, kv_mask=None):
    """Output and (dq, dk, dv) of PyTorch's SDPA, [B, L, H, D] like fvjax's."""
    tq, tk, tv = (torch.from_numpy(np.array(a)).transpose(1, 2).requires_grad_() for a in (q, k, v))
    mask = None if kv_mask is None else torch.from_numpy(kv_mask)[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)
    (out * torch.from_numpy(cotangent).transpose(1, 2)).sum().backward()
    grads = [a.grad.transpose(1, 2).numpy() for a in (tq, tk, tv)]
    return out.detach().transpose(1, 2).numpy(), grads


def _fvjax(q, k, v, cotangent, kv_mask=None):
    mask = None if kv_mask is None else jnp.asarray(kv_mask)
    fn = jax.jit(lambda q, k, v: xla_attention(q, k, v, mask))
    out, vjp = jax.vjp(fn, *(jnp.asarray(a) for a in (q, k, v)))
    return np.asarray(out), [np.asarray(g) for g in vjp(jnp.asarray(cotangent))]


def _assert_close(got, want, tol):
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= tol * scale, (np.abs(got - want).max(), scale)


@pytest.mark.parametrize("masked", [False, True])
def test_per_head_values_and_gradients_match_torch(masked):
    lq, lk = 512, 640
    assert lq * lk >= PER_HEAD_MIN_SCORES    # xla_attention takes the per-head path here
    q, k, v, cotangent = _inputs(lq, lk)
    kv_mask = None
    if masked:   # per batch row a different set of dropped keys, the first key always kept
        kv_mask = np.random.default_rng(3).random((2, lk)) < 0.6
        kv_mask[:, 0] = True
    want_out, want_grads = _torch_reference(q, k, v, cotangent, kv_mask)
    out, grads = _fvjax(q, k, v, cotangent, kv_mask)
    _assert_close(out, want_out, 1e-6)
    for got, want in zip(grads, want_grads):
        _assert_close(got, want, 2e-6)


def test_xla_attention_dispatches_on_the_score_size():
    q, k, v, _ = _inputs(512, 512, heads=3)
    heads_major = lambda a: jnp.asarray(a).transpose(0, 2, 1, 3).reshape(6, 512, 16)  # noqa: E731
    direct = per_head_attention(*(heads_major(a) for a in (q, k, v)))
    np.testing.assert_array_equal(np.asarray(xla_attention(*(jnp.asarray(a) for a in (q, k, v)))),
                                  np.asarray(direct.reshape(2, 3, 512, 16).transpose(0, 2, 1, 3)))
    small_q = jnp.asarray(q[:, :256])    # 256 x 512 scores: the batched products, still SDPA's values
    want, _ = _torch_reference(q[:, :256], k, v, np.zeros((2, 256, 3, 16), np.float32))
    _assert_close(np.asarray(xla_attention(small_q, jnp.asarray(k), jnp.asarray(v))), want, 1e-6)


def test_bf16_inputs_keep_fp32_logits_and_accumulation():
    q, k, v, _ = _inputs(512, 512)
    as_bf16 = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
    want, _ = _torch_reference(*(np.asarray(a.astype(jnp.float32)) for a in as_bf16),
                               np.zeros_like(q))
    out = xla_attention(*as_bf16)
    assert out.dtype == jnp.bfloat16
    # one bf16 rounding of the probabilities (as the batched path) and of the output
    _assert_close(np.asarray(out.astype(jnp.float32)), want, 1e-2)

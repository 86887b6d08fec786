"""Rematerialisation (gradient checkpointing) policies for the scanned transformer block.

"none" stores every intermediate of every block for the backward pass; "full" stores only the
block inputs (the scan carry) and recomputes the block; the others save the named subset.
Checkpoint names used by the Wan block: "attn_out" (self-attention kernel output),
"qkv" (the normed, roped q and k and v of self-attention).
"""
from __future__ import annotations

from typing import Callable

import jax

_cp = jax.checkpoint_policies

POLICIES: dict[str, object] = {
    "none": None,
    "full": _cp.nothing_saveable,
    "dots": _cp.dots_saveable,
    "dots_with_no_batch_dims": _cp.dots_with_no_batch_dims_saveable,
    "save_attention_out": _cp.save_only_these_names("attn_out"),
    "save_qkv_attention_out": _cp.save_only_these_names("qkv", "attn_out"),
}


def check_policy(name: str) -> None:
    if name not in POLICIES:
        raise ValueError(f"unknown remat policy {name!r}; choose one of {sorted(POLICIES)}")


def remat(fn: Callable, policy: str) -> Callable:
    """Wrap a scan body with jax.checkpoint under the named policy ("none": unchanged)."""
    check_policy(policy)
    if policy == "none":
        return fn
    # prevent_cse=False: inside lax.scan CSE across iterations cannot defeat the remat.
    return jax.checkpoint(fn, policy=POLICIES[policy], prevent_cse=False)

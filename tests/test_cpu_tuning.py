"""fvjax.cpu_tuning: the allocator setting stops XLA:CPU's per-execution page faults; the compiler options
keep YNNPACK to matmuls (values equal up to summation order). (The speed effect is measured in benchmarks/.)"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.cpu_tuning import compiler_options

# A program whose 64 MB intermediate is materialised (the barrier keeps XLA from fusing it away), so
# every execution allocates a 64 MB temporary buffer; prints the minor page faults of each of 48 runs.
_FAULTS = """
import json, resource, sys
from fvjax.cpu_tuning import retain_freed_host_memory
applied = retain_freed_host_memory() if sys.argv[1] == "tuned" else False
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jax.lax.optimization_barrier(jnp.sin(x)) * 2.0))
x = jnp.ones((4096, 4096), jnp.float32)
faults = []
for _ in range(48):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FVJAX_RETAIN_HOST_MEMORY"}
    env["XLA_FLAGS"] = ""   # one CPU device is enough here
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_retained_host_memory_removes_the_per_execution_page_faults():
    default, tuned = _faults("default"), _faults("tuned")
    pages = 64 * 2 ** 20 // 4096   # of the temporary buffer
    print(f"minor page faults per execution: default {default['faults']}, tuned {tuned['faults']}")
    assert tuned["applied"] is True and default["applied"] is False
    # glibc maps the temporary buffer afresh for every execution ...
    assert min(default["faults"][-40:]) >= pages * 3 // 4
    # ... unless told to keep freed memory: then executions reuse the heap and fault (next to) nothing.
    # Now and then the heap still grows by a buffer (fragmentation: what else allocated in between
    # decides; seen: 1-5 of 48 executions), so allow a quarter.
    assert sum(faults >= pages // 2 for faults in tuned["faults"][-40:]) <= 10


def test_retaining_can_be_switched_off_and_is_off_for_accelerators(monkeypatch):
    from fvjax.cpu_tuning import retain_freed_host_memory

    monkeypatch.setenv("FVJAX_RETAIN_HOST_MEMORY", "0")
    assert retain_freed_host_memory() is False
    monkeypatch.delenv("FVJAX_RETAIN_HOST_MEMORY")
    for platforms in ("cuda", "tpu", "cuda,cpu"):   # the host heap would stay at the peak of loading
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
        assert retain_freed_host_memory() is False


def _ynn_ops(compiled) -> set[str]:
    """The HLO opcodes (dot, reduce, ...) inside the compiled program's YNNPACK fusions."""
    text = compiled.as_text()
    called = set(re.findall(r"ynn_fusion[.\d]* = .*?calls=%?([\w.-]+)", text))
    ops, body = set(), None
    for line in text.splitlines():
        header = re.match(r"^%?([\w.-]+) .*\{$", line)
        if header:
            body = header.group(1) if header.group(1) in called else None
        elif body and line.strip() == "}":
            body = None
        elif body:
            ops.update(op for op in re.findall(r"= \S+ (\w+)\(", line) if op in ("dot", "reduce"))
    return ops


def test_compiler_options_keep_ynnpack_for_matmuls_only():
    def loss(x, w):   # a token-axis reduction (as in norm-scale gradients) beside a matmul
        return jnp.sum(x * x, axis=0) + jnp.sum(x @ w, axis=0)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((480, 256), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((256, 256), dtype=np.float32))
    options = compiler_options()
    assert options == {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
    plain, tuned = jax.jit(loss).lower(x, w).compile(), jax.jit(loss, compiler_options=options).lower(x, w).compile()
    assert _ynn_ops(plain) >= {"dot", "reduce"}   # XLA's default hands the reduction to YNNPACK too
    assert _ynn_ops(tuned) == {"dot"}              # now only the matmul
    np.testing.assert_allclose(np.asarray(tuned(x, w)), np.asarray(plain(x, w)), rtol=1e-5)

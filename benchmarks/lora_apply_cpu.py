"""LoRA on the training step: adding (x A) s B beside the frozen kernel (fvjax's default, Dense.lora) vs
materialising W + s A B per step and running the plain model, fwd+bwd with gradients for the factors only.

    python benchmarks/lora_apply_cpu.py [--reps 5]

Two shapes: a small Wan (dim 256, 2 layers) and the 1.3B's width (dim 1536, ffn 8960, 12 heads) with 2
layers; LoRA rank 16 on the attention projections and the FFN; fp32 on the CPU.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fvjax.families.registry import get_family
from fvjax.families.wan.config import WanConfig
from fvjax.lora.build import lora_model
from fvjax.lora.factors import factor_pairs, with_factors
from fvjax.lora.spec import LoraSpec
from fvjax.models.params import params_of

SHAPES = {
    "small (dim 256, 2 layers)": (WanConfig(num_attention_heads=2, attention_head_dim=128, ffn_dim=1024, num_layers=2,
                                            text_dim=256, freq_dim=256), (16, 3, 32, 32)),
    "1.3B width (dim 1536, 2 layers)": (WanConfig(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960,
                                                  num_layers=2, text_dim=4096, freq_dim=256), (16, 3, 32, 32)),
}
SPEC = LoraSpec(rank=16, alpha=16.0, target_modules=("to_q", "to_k", "to_v", "to_out", "ffn"))


def materialised(base: dict, factors: dict, targets, scale: float) -> dict:
    out = jax.tree.map(lambda x: x, base)
    for target, a, b in factor_pairs(factors, targets):
        node = out
        for part in target.path:
            node = node[part]
        node["kernel"] = node["kernel"] + scale * jnp.matmul(a, b)
    return out


def step_time(loss, factors, base, batch, reps: int) -> tuple[float, float]:
    """Median wall and process CPU seconds of one step (CPU time: the shared machine's load barely moves it)."""
    step = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(step(factors, base, *batch))   # compile
    walls, cpus = [], []
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(step(factors, base, *batch))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    family = get_family("wan")
    for name, (config, latent) in SHAPES.items():
        plain = family.abstract_model(config, jnp.float32)
        plain_def = nnx.graphdef(plain)
        base = jax.jit(lambda: params_of(family.build_model(config, rngs=nnx.Rngs(0), param_dtype=jnp.float32,
                                                            dtype=jnp.float32)))()
        lora = lora_model(family, config, SPEC, jnp.float32, where="bench", key="lora")
        factors = jax.tree.map(lambda s: 0.01 * jnp.ones(s.shape, s.dtype), lora.abstract_factors)
        rng = np.random.default_rng(0)
        batch = (rng.standard_normal((1, *latent), np.float32), np.array([500.0], np.float32),
                 rng.standard_normal((1, 64, config.text_dim), np.float32))

        def factored_loss(f, b, x, t, text):
            return jnp.mean(jnp.square(nnx.merge(lora.graphdef, with_factors(b, f))(x, t, text)))

        def materialised_loss(f, b, x, t, text):
            return jnp.mean(jnp.square(nnx.merge(plain_def, materialised(b, f, lora.targets, SPEC.scale))(x, t, text)))

        fa, fa_cpu = step_time(factored_loss, factors, base, batch, args.reps)
        ma, ma_cpu = step_time(materialised_loss, factors, base, batch, args.reps)
        tokens = latent[1] * latent[2] // 2 * latent[3] // 2
        print(f"{name}, {tokens} tokens, fwd+bwd: factored {fa * 1e3:.0f} ms wall / {fa_cpu * 1e3:.0f} ms CPU, "
              f"materialised {ma * 1e3:.0f} ms wall / {ma_cpu * 1e3:.0f} ms CPU (materialised / factored: wall "
              f"{ma / fa:.2f}x, CPU {ma_cpu / fa_cpu:.2f}x)", flush=True)


if __name__ == "__main__":
    main()

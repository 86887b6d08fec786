"""Write a synthetic preprocessed dataset (random latents and text embeddings) for tests and CPU demos.

    python -m fvjax.data.synthetic --out DIR --format fvjax|parquet --num-samples N \
        --latent-shape 16,T,H,W --text-len L --text-dim D --seed S

Latents are stored as a VAE makes them: mean + std * N(0, 1) with the family's latent statistics (Wan2.1's
for 16 channels), so the trainer's normalisation turns them into standard normals (channel counts the
statistics do not fit, or a family without them: standard normal). Sample i has
max(1, L - i % (L // 2 + 1)) valid text tokens (so masks vary, the first sample has L), also standard normal.
The same arguments always give the same bytes.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from fvjax.errors import ArgumentParser, UserError, cli_entry


def synthetic_samples(num_samples: int, latent_shape: Sequence[int], text_len: int, text_dim: int,
                      seed: int = 0, family: str = "wan") -> Iterator[dict]:
    from fvjax.families.registry import get_family

    rng = np.random.default_rng(seed)
    mean, std = np.float32(0), np.float32(1)
    stats = get_family(family, "--family", None).latent_statistics(None)
    if stats is not None and latent_shape[0] == len(stats[0]):
        mean = np.asarray(stats[0], np.float32).reshape(-1, 1, 1, 1)
        std = np.asarray(stats[1], np.float32).reshape(-1, 1, 1, 1)
    for i in range(num_samples):
        length = max(1, text_len - i % (text_len // 2 + 1))
        yield {"id": f"synthetic-{i:06d}", "caption": f"synthetic sample {i}",
               "latents": mean + std * rng.standard_normal(tuple(latent_shape), dtype=np.float32),
               "text_embeds": rng.standard_normal((length, text_dim), dtype=np.float32)}


def write_synthetic(out: str, fmt: str, num_samples: int, latent_shape: Sequence[int], text_len: int,
                    text_dim: int, seed: int = 0, family: str = "wan") -> str:
    samples = synthetic_samples(num_samples, latent_shape, text_len, text_dim, seed, family)
    if fmt == "fvjax":
        from fvjax.data.fvjax_format import write_fvjax_dataset
        return write_fvjax_dataset(out, samples)
    if fmt == "parquet":
        from fvjax.data.parquet_format import write_parquet_dataset
        return write_parquet_dataset(out, samples)
    raise UserError("--format", None, f"unknown format {fmt!r}; use fvjax or parquet")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(x) for x in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) <= 0:
        raise UserError("--latent-shape", None, f"expected four positive integers C,T,H,W (e.g. 16,3,8,8), got {text!r}")
    return shape


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m fvjax.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="new dataset directory")
    parser.add_argument("--format", default="fvjax", choices=["fvjax", "parquet"])
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--latent-shape", default="16,3,8,8", help="C,T,H,W")
    parser.add_argument("--text-len", type=int, default=16, help="longest text (valid tokens)")
    parser.add_argument("--text-dim", type=int, default=32, help="4096 for UMT5-XXL; 32 for the tiny models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", default="wan", help="whose latent statistics shape the latents (default wan)")
    args = parser.parse_args(argv)
    if args.num_samples <= 0:
        raise UserError("--num-samples", None, "must be positive")
    if args.text_len <= 0 or args.text_dim <= 0:
        raise UserError("--text-len" if args.text_len <= 0 else "--text-dim", None, "must be positive")
    out = write_synthetic(args.out, args.format, args.num_samples, _shape(args.latent_shape), args.text_len,
                          args.text_dim, args.seed, args.family)
    print(f"wrote {args.num_samples} samples ({args.format}) to {out}")
    return 0


if __name__ == "__main__":
    main()

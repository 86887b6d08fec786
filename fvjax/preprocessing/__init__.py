"""Pieces of `python -m fvjax.preprocess` (videos + captions -> VAE latents + UMT5 embeddings on disk):
inputs.py (which videos, which captions), clips.py (frame sampling, crop, resize), encode.py (the JAX VAE
and text encoder in batches), store.py (the resumable output directory)."""

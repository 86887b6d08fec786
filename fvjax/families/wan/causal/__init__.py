"""The causal Wan DiT (Self-Forcing's student): the Wan2.1 DiT's parameters with block-causal attention,
per-frame timesteps and a functional KV cache. See transformer.py (the model), cache.py (the cache),
config.py (the config and window semantics)."""
from fvjax.families.wan.causal.cache import ChunkKV, KVCache, abstract_cache, empty_cache, write_chunk
from fvjax.families.wan.causal.config import (CAUSAL_CLASS_NAME, PRESETS, CausalWanConfig, block_bounds,
                                              block_sizes)
from fvjax.families.wan.causal.transformer import CausalWanTransformer, model_from_params

__all__ = ["CAUSAL_CLASS_NAME", "PRESETS", "ChunkKV", "CausalWanConfig", "CausalWanTransformer", "KVCache",
           "abstract_cache", "block_bounds", "block_sizes", "empty_cache", "model_from_params", "write_chunk"]

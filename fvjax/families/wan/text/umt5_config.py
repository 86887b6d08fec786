"""UMT5 encoder configuration, field for field as transformers' `UMT5Config` (config.json of a
`UMT5EncoderModel`, e.g. the `text_encoder/` folder of a Wan2.1 Diffusers pipeline).

Fields that shape the encoder's math are kept; fields known not to (dropout, decoder-only settings,
generation defaults, bookkeeping) are ignored; anything else is refused, since fvjax cannot tell whether
it changes the numbers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fvjax.errors import fail
from fvjax.io.json_file import read_json

MODEL_TYPE = "umt5"
# transformers: feed_forward_proj "gated-gelu" means the tanh-approximated GELU ("gelu_new"), a legacy
# special case; otherwise "[gated-]<act>" names the activation.
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu")

# Present in real configs (transformers' own writes, google/umt5-*, Wan's text_encoder) without any
# effect on an encoder's forward pass at inference.
_IGNORED = frozenset({
    "_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype", "model_type",
    "dropout_rate", "classifier_dropout", "initializer_factor", "num_decoder_layers", "decoder_start_token_id",
    "is_encoder_decoder", "use_cache", "output_past", "pad_token_id", "eos_token_id", "bos_token_id",
    "sep_token_id", "tie_word_embeddings", "scale_decoder_outputs", "tokenizer_class", "scalable_attention",
    # derived from feed_forward_proj by transformers (which recomputes them and ignores the stored values)
    "dense_act_fn", "is_gated_act",
    # generic PretrainedConfig bookkeeping and generation defaults
    "_attn_implementation", "_attn_implementation_autoset", "attn_implementation", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "chunk_size_feed_forward", "gradient_checkpointing", "id2label", "label2id", "num_labels",
    "finetuning_task", "problem_type", "prefix", "task_specific_params", "max_length", "min_length",
    "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature",
    "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "cross_attention_hidden_size",
    "add_cross_attention", "tie_encoder_decoder", "is_decoder", "pruned_heads", "quantization_config",
})


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    vocab_size: int = 250112
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    @property
    def is_gated_act(self) -> bool:
        return self.feed_forward_proj.split("-")[0] == "gated"

    @property
    def activation(self) -> str:
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    def check(self, where: object = "config") -> None:
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or self.activation not in ACTIVATIONS:
            fail(where, "feed_forward_proj", f"is {self.feed_forward_proj!r}; expected '[gated-]<act>' with act one "
                 f"of {', '.join(ACTIVATIONS)} (Wan's UMT5-XXL uses 'gated-gelu')")
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(where, name, f"is {getattr(self, name)!r}; must be a positive integer")
        buckets, distance = self.relative_attention_num_buckets, self.relative_attention_max_distance
        # The bidirectional encoder splits the buckets by direction, then half exact / half logarithmic.
        if not isinstance(buckets, int) or buckets < 4 or buckets % 4:
            fail(where, "relative_attention_num_buckets", f"is {buckets!r}; must be a multiple of 4 (>= 4)")
        if not isinstance(distance, int) or distance <= buckets // 4:
            fail(where, "relative_attention_max_distance", f"is {distance!r}; must exceed "
                 f"relative_attention_num_buckets / 4 = {buckets // 4}")

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], where: object = "config.json") -> "UMT5Config":
        """From a transformers UMT5 config dict; refuses what would change the encoder's math."""
        if not isinstance(cfg, dict):
            fail(where, None, "not a JSON object; expected a transformers UMT5 config")
        model_type = cfg.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            fail(where, "model_type", f"is {model_type!r}; fvjax's text encoder is UMT5 (every layer has its own "
                 "relative position bias; T5 shares layer 0's) - point the path at Wan's text_encoder/")
        if cfg.get("is_decoder"):
            fail(where, "is_decoder", "is true: a causal (decoder) stack; fvjax runs the bidirectional encoder only")
        if cfg.get("pruned_heads"):
            fail(where, "pruned_heads", "is set; pruned attention heads are not supported")
        if cfg.get("quantization_config"):
            fail(where, "quantization_config", "is set; quantized text encoders are not supported, use the "
                 "bf16/fp32 checkpoint")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in cfg if k not in fields and k not in _IGNORED)
        if unknown:
            fail(where, unknown[0], "unknown UMT5 config field: fvjax does not know whether it changes the "
                 "encoder's output; remove it if it does not (a UMT5EncoderModel config.json is expected)")
        missing = [k for k in ("d_model", "num_layers", "num_heads", "vocab_size") if k not in cfg]
        if missing:
            fail(where, missing[0], "missing; this does not look like a UMT5 config")
        config = cls(**{k: v for k, v in cfg.items() if k in fields})
        config.check(where)
        return config

    def to_hf_config(self) -> dict[str, Any]:
        """A config.json that transformers loads as the same UMT5EncoderModel."""
        out: dict[str, Any] = {"architectures": ["UMT5EncoderModel"], "model_type": MODEL_TYPE}
        out.update(dataclasses.asdict(self))
        out.update(is_decoder=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        return out

    @classmethod
    def from_json_file(cls, path: str | Path) -> "UMT5Config":
        return cls.from_hf_config(read_json(path), where=Path(path))

PRESETS: dict[str, UMT5Config] = {
    # google/umt5-xxl's encoder as shipped in Wan2.1's Diffusers pipelines (text_encoder/config.json).
    "umt5-xxl": UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                           relative_attention_num_buckets=32, relative_attention_max_distance=128),
    # Tests and CPU demos: d_model 32 matches the "tiny" Wan transformer's text_dim.
    "tiny": UMT5Config(vocab_size=256, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                       relative_attention_num_buckets=8, relative_attention_max_distance=16),
}

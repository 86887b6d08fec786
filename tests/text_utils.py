"""Tiny UMT5 text encoders and tokenizers built offline for the text-encoder tests.

The tokenizer is transformers' T5Tokenizer (a `tokenizers` Unigram model, as google/umt5-xxl's) built from a
hand-made vocabulary: <pad>=0, </s>=1, <unk>=2, "▁", every character of the test texts (alone and
word-initial) and a few whole words, so prompts tokenize into several pieces per word and truncate.
"""
from __future__ import annotations

import string

from fvjax.families.wan.text import WAN_DEFAULT_NEGATIVE_PROMPT, WAN_NEGATIVE_PROMPT_ZH

TEXTS = [WAN_DEFAULT_NEGATIVE_PROMPT, WAN_NEGATIVE_PROMPT_ZH, string.ascii_letters + string.digits + ".,!?'&;:-",
         "猫在冲浪"]
WORDS = ["▁a", "▁cat", "▁the", "▁dog", "▁on", "▁beach", "ing", "ed", "▁surf", "▁static", "▁low", "▁quality"]


def tiny_tokenizer():
    from transformers import T5Tokenizer

    chars = sorted({c for text in TEXTS for c in text if not c.isspace()})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -6.0) for c in chars] + [("▁" + c, -5.0) for c in chars] + [(w, -3.0) for w in WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_hf_encoder(vocab_size: int, seed: int = 0, **overrides):
    """A transformers UMT5EncoderModel with random weights of a visible scale (fp32, eval mode)."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    kwargs = dict(vocab_size=vocab_size, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                  relative_attention_num_buckets=8, relative_attention_max_distance=16)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = UMT5EncoderModel(UMT5Config(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model

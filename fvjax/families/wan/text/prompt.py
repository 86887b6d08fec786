"""Prompt text -> Wan text embeddings, as Diffusers' WanPipeline builds `prompt_embeds`.

    encoder = PromptEncoder.load("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")   # pipeline dir or cached hub id
    embeds = encoder.encode(["a cat surfing"])                         # float32 [1, 512, 4096]

Per prompt (WanPipeline._get_t5_prompt_embeds): clean the text (ftfy when installed, HTML-unescape twice,
collapse whitespace, strip); tokenize with the pipeline's tokenizer (pad to max_length, truncate, EOS
appended); run the UMT5 encoder with the attention mask; zero every position from the prompt's real
length (mask ones, EOS included) on. The DiT then receives all max_length positions, no mask.
"""
from __future__ import annotations

import html
import os
from typing import Any, Sequence

import numpy as np

from fvjax.errors import fail

try:  # Diffusers cleans with the `regex` package; its \s differs from `re`'s on a few control characters.
    import regex as _re
except ImportError:  # pragma: no cover - regex comes with transformers
    import re as _re

TEXT_LEN = 512
TOKENIZER_SUBFOLDER = "tokenizer"

# The negative prompt FastVideo encodes for DMD2's unconditional teacher branch with Wan2.1 T2V: its
# `SamplingParam.negative_prompt` for Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers (fastvideo/configs/sample/wan.py,
# read via `ensure_negative_conditioning` -> `SamplingParam.from_pretrained(model_path)`), which is the
# English rendering of the original Wan's Chinese `sample_neg_prompt` below.
WAN_DEFAULT_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still "
    "picture, messy background, three legs, many people in the background, walking backwards")
# The original Wan2.1 repo's `sample_neg_prompt` (wan/configs/shared_config.py); FastVideo uses this one for
# Wan2.1-Fun and Wan2.2 models.
WAN_NEGATIVE_PROMPT_ZH = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")


def prompt_clean(text: str) -> str:
    """Diffusers' Wan prompt cleaning (pipeline_wan.prompt_clean)."""
    try:
        import ftfy
    except ImportError:
        ftfy = None
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _re.sub(r"\s+", " ", text).strip()


def tokenizer_dir(path: str | os.PathLike, where: object = "path"):
    """The tokenizer folder of a pipeline dir (tokenizer/), or `path` itself when it is a tokenizer dir."""
    from fvjax.weights.paths import existing_dir

    root = existing_dir(path, where, "'tokenizer/*' 'text_encoder/*'")
    if (root / TOKENIZER_SUBFOLDER / "tokenizer_config.json").is_file():
        return root / TOKENIZER_SUBFOLDER
    if (root / "tokenizer_config.json").is_file():
        return root
    fail(root, None, f"no tokenizer: expected a Diffusers pipeline with {TOKENIZER_SUBFOLDER}/tokenizer_config.json")


class PromptEncoder:
    """A tokenizer and a jitted UMT5 encoder; `encode` returns WanPipeline's prompt embeddings."""

    def __init__(self, tokenizer, encoder, *, batch_size: int = 8):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        self.tokenizer = tokenizer
        self.encoder = encoder
        self.config = encoder.config
        self.batch_size = batch_size
        graphdef, state = nnx.split(encoder)
        self._state = state

        def run(state, ids, mask):
            hidden = nnx.merge(graphdef, state)(ids, mask)
            return jnp.where(mask[..., None] > 0, hidden, 0.0)  # zeros after each prompt's real length

        self._run = jax.jit(run)

    @classmethod
    def load(cls, path: str | os.PathLike, dtype: Any = None, *, where: object = "path",
             batch_size: int = 8) -> "PromptEncoder":
        """From a Diffusers pipeline dir (tokenizer/ + text_encoder/) or a hub id in the local HF cache.
        dtype: the encoder's parameter and compute dtype (None: as stored)."""
        from transformers import AutoTokenizer

        from fvjax.families.wan.text.umt5_loading import load_umt5

        _, encoder = load_umt5(path, dtype, where=where)
        tok_dir = tokenizer_dir(path, where)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        except (OSError, ValueError) as err:
            fail(tok_dir, None, f"cannot load the tokenizer: {' '.join(str(err).split())}")
        return cls(tokenizer, encoder, batch_size=batch_size)

    def tokenize(self, prompts: Sequence[str], max_length: int = TEXT_LEN) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids int32 [B, max_length], attention_mask int32 [B, max_length]) of the cleaned prompts."""
        batch = self.tokenizer([prompt_clean(p) for p in prompts], padding="max_length", max_length=max_length,
                               truncation=True, add_special_tokens=True, return_attention_mask=True,
                               return_tensors="np")
        return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)

    def encode_with_mask(self, prompts: str | Sequence[str], max_length: int = TEXT_LEN
                         ) -> tuple[np.ndarray, np.ndarray]:
        """(embeds float32 [B, max_length, d_model], mask int32 [B, max_length])."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("no prompts to encode")
        ids, mask = self.tokenize(prompts, max_length)
        if int(ids.max()) >= self.config.vocab_size:
            fail(self.tokenizer.name_or_path or "tokenizer", None, f"produced token id {int(ids.max())}, beyond "
                 f"the text encoder's vocab_size {self.config.vocab_size}: tokenizer and text encoder do not "
                 "belong together")
        chunks = [np.asarray(self._run(self._state, ids[i:i + self.batch_size], mask[i:i + self.batch_size]),
                             np.float32)
                  for i in range(0, len(prompts), self.batch_size)]
        return np.concatenate(chunks, axis=0), mask

    def encode(self, prompts: str | Sequence[str], max_length: int = TEXT_LEN) -> np.ndarray:
        """float32 [B, max_length, d_model], exactly WanPipeline's prompt_embeds (fp32)."""
        return self.encode_with_mask(prompts, max_length)[0]

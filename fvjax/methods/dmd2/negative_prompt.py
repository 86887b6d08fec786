"""The negative-prompt embedding DMD2's teacher uses for its unconditional branch.

FastVideo encodes Wan's default negative prompt with UMT5 at train start and post-processes it like the
dataset embeddings: padded with zeros to 512 tokens, mask 1 over the valid tokens. fvjax takes, in order:
1. a precomputed embedding from the file named by `method_config.negative_prompt_embedding` (an [L, text_dim]
   array in .npy, or the single tensor of a .safetensors file);
2. else, when the teacher's path is a Diffusers pipeline with text_encoder/ and tokenizer/ (a local dir or
   a hub id in the local cache), `method_config.negative_prompt` (default: the family's default negative
   prompt; Wan2.1: FastVideo's) encoded once with that pipeline's text encoder (the family's loader);
3. else zeros (an empty prompt's padding), with a warning.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fvjax.errors import UserError, fail

TEXT_LEN = 512
KEY = "method_config.negative_prompt_embedding"
TEXT_KEY = "method_config.negative_prompt"


def read_embedding(path: str, where: object) -> np.ndarray:
    file = Path(path).expanduser()
    if not file.is_file():
        fail(where, KEY, f"{path!r} does not exist (an [L, text_dim] .npy or .safetensors file)")
    try:
        if file.suffix == ".npy":
            array = np.load(file, allow_pickle=False)
        elif file.suffix == ".safetensors":
            from safetensors.numpy import load_file
            tensors = load_file(str(file))
            if len(tensors) != 1:
                fail(where, KEY, f"{path!r} holds {len(tensors)} tensors ({', '.join(sorted(tensors))}); "
                     "expected exactly one, the [L, text_dim] embedding")
            array = next(iter(tensors.values()))
        else:
            fail(where, KEY, f"{path!r}: expected a .npy or .safetensors file")
    except (OSError, ValueError) as err:
        fail(where, KEY, f"cannot read {path!r}: {err}")
    if array.ndim == 3 and array.shape[0] == 1:   # a batch of one, as an encoder writes it
        array = array[0]
    return np.asarray(array, np.float32) if array.ndim == 2 else fail(
        where, KEY, f"{path!r} has shape {list(array.shape)}; expected [L, text_dim]")


def pipeline_with_text_encoder(path: str) -> Path | None:
    """The Diffusers pipeline dir that `path` names (a local dir or a hub id already in the local HF
    cache) when it holds text_encoder/ and tokenizer/; None otherwise (nothing is downloaded)."""
    if not path:
        return None
    root = Path(path).expanduser()
    if not root.exists():
        try:
            from fvjax.weights.paths import existing_dir

            root = existing_dir(path, "path", "'text_encoder/*' 'tokenizer/*'")
        except UserError:
            return None
    if (root / "text_encoder" / "config.json").is_file() and (root / "tokenizer" / "tokenizer_config.json").is_file():
        return root
    return None


def _family(family):
    if family is not None:
        return family
    from fvjax.families.registry import DEFAULT_FAMILY, get_family

    return get_family(DEFAULT_FAMILY)


def encode_negative_prompt(pipeline: Path, text: str, text_dim: int, where: object,
                           text_len: int = TEXT_LEN, family=None) -> dict[str, np.ndarray]:
    """`text` encoded by the pipeline's text encoder, as the family's pipeline encodes a prompt."""
    encoder = _family(family).load_prompt_encoder(pipeline, where=pipeline)
    if encoder.config.d_model != text_dim:
        fail(where, TEXT_KEY, f"the text encoder in {pipeline / 'text_encoder'} gives {encoder.config.d_model}-dim "
             f"embeddings; the teacher expects text_dim {text_dim}")
    embeds, mask = encoder.encode_with_mask([text], text_len)
    return {"embeds": embeds[0], "mask": mask[0]}


def negative_prompt(path: str, text_dim: int, where: object, text_len: int = TEXT_LEN, *,
                    pipeline: Path | None = None, text: str | None = None, family=None) -> dict[str, np.ndarray]:
    """{"embeds": float32 [text_len, text_dim], "mask": int32 [text_len]}: the embedding file padded with
    zeros; else `text` (default: the family's default negative prompt) encoded with `pipeline`'s text
    encoder; else zeros with a warning on stderr."""
    embeds = np.zeros((text_len, text_dim), np.float32)
    mask = np.zeros((text_len,), np.int32)
    if path and text is not None:
        fail(where, TEXT_KEY, f"is set together with {KEY}; give one: the text to encode, or its embedding")
    if not path and pipeline is not None:
        family = _family(family)
        return encode_negative_prompt(pipeline, family.defaults.negative_prompt if text is None else text, text_dim,
                                      where, text_len, family)
    if not path:
        if text is not None:
            fail(where, TEXT_KEY, "needs a text encoder: the teacher's path must be a Diffusers pipeline with "
                 "text_encoder/ and tokenizer/ (or give method_config.negative_prompt_embedding instead)")
        print("fvjax: warning: method_config.negative_prompt_embedding is not set and the teacher's path has no "
              "text_encoder/ + tokenizer/; the teacher's unconditional branch uses a zero embedding (FastVideo "
              "uses Wan's encoded default negative prompt)", file=sys.stderr)
        return {"embeds": embeds, "mask": mask}
    array = read_embedding(path, where)
    if array.shape[1] != text_dim:
        fail(where, KEY, f"{path!r} has text dim {array.shape[1]}; the teacher expects {text_dim}")
    if array.shape[0] > text_len:
        fail(where, KEY, f"{path!r} has {array.shape[0]} tokens; at most {text_len}")
    if not np.all(np.isfinite(array)):
        fail(where, KEY, f"{path!r} contains non-finite values")
    embeds[:array.shape[0]] = array
    mask[:array.shape[0]] = 1
    return {"embeds": embeds, "mask": mask}


def teacher_negative_prompt(config, ctx) -> dict[str, np.ndarray]:
    """DMD2's `frozen_extras` hook: the negative prompt for the teacher's unconditional branch."""
    text_dim, text_len = ctx.models["teacher"].config.text_dim, ctx.family.defaults.text_len
    if ctx.abstract:
        return {"embeds": np.zeros((text_len, text_dim), np.float32), "mask": np.zeros((text_len,), np.int32)}
    path = ctx.role_paths["teacher"]
    pipeline = None if config.negative_prompt_embedding else pipeline_with_text_encoder(path)
    return negative_prompt(config.negative_prompt_embedding, text_dim, ctx.where, text_len, pipeline=pipeline,
                           text=config.negative_prompt, family=ctx.family)

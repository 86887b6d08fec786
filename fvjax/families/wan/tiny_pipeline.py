"""A tiny Wan2.1 text-to-video pipeline with random weights, in Diffusers' on-disk layout (the Wan
family's demo pipeline: `python -m fvjax.tiny_pipeline --out DIR`).

For demos and smoke tests where the real pipeline cannot be downloaded: transformer/ (the "tiny" DiT
preset), vae/ (the "tiny" VAE preset: Wan2.1's layout with 8 base channels), text_encoder/ (the "tiny"
UMT5 preset, d_model 32 = the tiny DiT's text_dim), tokenizer/ (a T5 Unigram tokenizer over characters and
a few words, built in code), scheduler/ (UniPC in Wan's flow-matching settings), model_index.json.
Written with fvjax's own writers (no torch); Diffusers' WanPipeline.from_pretrained loads it. The videos it
makes are noise: the weights are random.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np

_WORDS = "a the cat dog red blue green video of and on in with is runs jumps sky over water slowly".split()
SCHEDULER_CONFIG = {"_class_name": "UniPCMultistepScheduler", "num_train_timesteps": 1000,
                    "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}
MODEL_INDEX = {"_class_name": "WanPipeline", "scheduler": ["diffusers", "UniPCMultistepScheduler"],
               "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
               "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}


def tiny_tokenizer(vocab_size: int):
    """transformers' T5 tokenizer (a `tokenizers` Unigram model, as UMT5's) over letters, digits, a few
    punctuation marks and words; unknown characters become <unk>; every id < vocab_size."""
    from transformers import T5Tokenizer

    chars = list(string.ascii_letters + string.digits + ".,!?'-")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("\u2581" + c, -3.5) for c in chars] + [("\u2581" + w, -1.0) for w in _WORDS]
    assert len(vocab) <= vocab_size, (len(vocab), vocab_size)
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def random_params(abstract: dict, seed: int) -> dict:
    """Random float32 numpy leaves for an abstract parameter tree (shapes only, no XLA compile: a jitted
    NNX initialisation of the VAE takes minutes to compile on a CPU). Norm scales near 1, biases near 0,
    weights with variance 1 / fan_in."""
    import jax

    rng = np.random.default_rng(seed)

    def fill(path, leaf) -> np.ndarray:
        name = str(getattr(path[-1], "key", path[-1]))
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if name in ("scale", "gamma"):
            return 1.0 + 0.1 * noise
        if name == "bias" or len(leaf.shape) < 2:
            return 0.02 * noise
        if name == "embedding":
            return noise
        fan_in = leaf.shape[-2] if name == "kernel" else leaf.shape[-1]   # kernels are [..., in, out]
        return noise / np.float32(np.sqrt(fan_in))

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _write_vae(directory: Path, seed: int) -> None:
    from fvjax.families.wan.vae.config import VAE_PRESETS
    from fvjax.families.wan.vae.keymap import vae_params_to_diffusers
    from fvjax.families.wan.vae.model import abstract_vae_params
    from fvjax.weights.safetensors_io import TensorSpec, write_safetensors

    config = VAE_PRESETS["tiny"]
    tensors = vae_params_to_diffusers(config, random_params(abstract_vae_params(config), seed))
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config.to_diffusers_config(), indent=2) + "\n")
    specs = [TensorSpec(name, np.dtype(np.float32), tuple(t.shape)) for name, t in tensors.items()]
    write_safetensors(directory / "diffusion_pytorch_model.safetensors", specs,
                      lambda name: np.asarray(tensors[name], np.float32), metadata={"format": "pt"})


def write_tiny_pipeline(out: str | Path, seed: int = 0) -> Path:
    """The pipeline at `out` (a new directory, written atomically)."""
    from fvjax.io.atomic import atomic_directory
    from fvjax.families.wan.config import PRESETS
    from fvjax.families.wan.transformer import abstract_params
    from fvjax.families.wan.text.umt5 import abstract_params as abstract_umt5_params
    from fvjax.families.wan.text.umt5_config import PRESETS as UMT5_PRESETS
    from fvjax.families.wan.text.umt5_loading import save_umt5
    from fvjax.families.wan.family import WAN
    from fvjax.weights.diffusers_writer import write_diffusers_dir

    dit_config, text_config = PRESETS["tiny"], UMT5_PRESETS["tiny"]
    assert text_config.d_model == dit_config.text_dim
    with atomic_directory(out, where="--out") as tmp:
        (tmp / "transformer").mkdir()
        write_diffusers_dir(tmp / "transformer", WAN, dit_config, random_params(abstract_params(dit_config), seed))
        _write_vae(tmp / "vae", seed + 1)
        save_umt5(tmp / "text_encoder", text_config, random_params(abstract_umt5_params(text_config), seed + 2))
        tiny_tokenizer(text_config.vocab_size).save_pretrained(str(tmp / "tokenizer"))
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
        (tmp / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
    return Path(out)


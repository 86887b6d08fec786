"""Wan's text encoder: UMT5 (transformers' UMT5EncoderModel) in Flax NNX, its weights, and prompt encoding."""
from fvjax.families.wan.text.prompt import WAN_DEFAULT_NEGATIVE_PROMPT, WAN_NEGATIVE_PROMPT_ZH, PromptEncoder, prompt_clean
from fvjax.families.wan.text.umt5 import UMT5Encoder, abstract_params, count_params, param_logical_axes
from fvjax.families.wan.text.umt5_config import PRESETS, UMT5Config
from fvjax.families.wan.text.umt5_loading import load_umt5, load_umt5_params, save_umt5

__all__ = ["PRESETS", "PromptEncoder", "UMT5Config", "UMT5Encoder", "WAN_DEFAULT_NEGATIVE_PROMPT",
           "WAN_NEGATIVE_PROMPT_ZH", "abstract_params", "count_params", "load_umt5", "load_umt5_params",
           "param_logical_axes", "prompt_clean", "save_umt5"]

"""The causal Wan's configuration: the Wan2.1 DiT config plus FastVideo's causal fields.

FastVideo's `CausalWanTransformer3DModel` reads them from the transformer's config.json by these names
(its `WanVideoArchConfig` fields): `num_frames_per_block` (latent frames per causal block, 1..3),
`local_attn_size` (-1 = global attention, else the attention window in latent frames) and `sink_size`
(first latent frames that never leave the window). Legacy TrainingArgs spell the first
`num_frame_per_block`; both are read.

Window semantics (both attention modes): a query block ending at latent frame e attends to the frames
[0, sink) and [max(0, e - W + sink), e) — the W-frame buffer of FastVideo's rolling KV cache, sinks
included. With sink 0 this is exactly FastVideo's full-sequence mask (kv >= end - W*S); FastVideo's
full-sequence mask ignores sink_size (its cache mode keeps the sinks), fvjax keeps the sinks in both.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fvjax.errors import fail
from fvjax.families.wan.config import DIFFUSERS_CLASS_NAME, PRESETS as WAN_PRESETS, WanConfig
from fvjax.models.causal_blocks import block_bounds, block_sizes  # noqa: F401  (part of this module's API)

CAUSAL_CLASS_NAME = "CausalWanTransformer3DModel"
_LEGACY_FPB_KEY = "num_frame_per_block"


@dataclasses.dataclass(frozen=True)
class CausalWanConfig(WanConfig):
    num_frames_per_block: int = 3
    local_attn_size: int = -1
    sink_size: int = 0

    @property
    def windowed(self) -> bool:
        return self.local_attn_size != -1

    def check(self, where: object = "config") -> None:
        super().check(where)
        if not (isinstance(self.num_frames_per_block, int) and 1 <= self.num_frames_per_block <= 3):
            fail(where, "num_frames_per_block", f"is {self.num_frames_per_block!r}; FastVideo's causal Wan takes 1..3")
        if not isinstance(self.sink_size, int) or self.sink_size < 0:
            fail(where, "sink_size", f"is {self.sink_size!r}; must be an int >= 0")
        if not isinstance(self.local_attn_size, int) or (self.local_attn_size != -1 and self.local_attn_size < 1):
            fail(where, "local_attn_size", f"is {self.local_attn_size!r}; -1 (global) or a window in latent frames")
        if self.windowed and self.local_attn_size < self.sink_size + self.num_frames_per_block:
            fail(where, "local_attn_size", f"is {self.local_attn_size}; the window must hold the sink frames "
                 f"({self.sink_size}) and a whole block ({self.num_frames_per_block} frames)")
        if not self.windowed and self.sink_size:
            fail(where, "sink_size", "needs a window (local_attn_size != -1)")

    @classmethod
    def from_diffusers_config(cls, cfg: dict[str, Any], where: object = "config.json") -> "CausalWanConfig":
        """From a causal config.json (FastVideo's class), or a bidirectional Wan2.1 one (the causal
        student's usual initialisation) whose causal fields take their defaults."""
        if not isinstance(cfg, dict):
            fail(where, None, f"not a JSON object; expected a Diffusers {CAUSAL_CLASS_NAME} config")
        class_name = cfg.get("_class_name")
        if class_name not in (None, CAUSAL_CLASS_NAME, DIFFUSERS_CLASS_NAME):
            fail(where, "_class_name", f"is {class_name!r}, not a {CAUSAL_CLASS_NAME} (or {DIFFUSERS_CLASS_NAME})")
        cfg = dict(cfg)
        if cfg.get("rope_cache_policy", "absolute") != "absolute":
            fail(where, "rope_cache_policy", f"is {cfg['rope_cache_policy']!r}; fvjax's KV cache keeps absolute RoPE "
                 "positions (FastVideo's default 'absolute')")
        if _LEGACY_FPB_KEY in cfg and "num_frames_per_block" not in cfg:
            cfg["num_frames_per_block"] = cfg[_LEGACY_FPB_KEY]
        cfg["_class_name"] = DIFFUSERS_CLASS_NAME          # the parent's check: the same parameters
        return super().from_diffusers_config.__func__(cls, cfg, where)

    def to_diffusers_config(self) -> dict[str, Any]:
        out = super().to_diffusers_config()
        out["_class_name"] = CAUSAL_CLASS_NAME
        return out

    @classmethod
    def from_wan(cls, config: WanConfig, **causal) -> "CausalWanConfig":
        """The causal variant of a bidirectional config (same parameters)."""
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(WanConfig)}
        return cls(**fields, **causal)


# Causal twins of the published and tiny Wan configs (same parameters: the bidirectional weights load).
PRESETS: dict[str, CausalWanConfig] = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": CausalWanConfig.from_wan(WAN_PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": CausalWanConfig.from_wan(WAN_PRESETS["Wan-AI/Wan2.1-T2V-14B-Diffusers"]),
    # FastVideo's Self-Forcing student (wlsaidhi/SFWan2.1-T2V-1.3B-Diffusers): the 1.3B DiT, 3-frame blocks.
    "wlsaidhi/SFWan2.1-T2V-1.3B-Diffusers": CausalWanConfig.from_wan(WAN_PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]),
    # Tiny causal students for tests and CPU demos: the "tiny" Wan's parameters (so a "tiny" or
    # "tiny-teacher" bidirectional teacher pairs with them), 1-frame and 3-frame blocks, and a window.
    "tiny-causal": CausalWanConfig.from_wan(WAN_PRESETS["tiny"], num_frames_per_block=3),
    "tiny-causal-framewise": CausalWanConfig.from_wan(WAN_PRESETS["tiny"], num_frames_per_block=1),
    "tiny-causal-window": CausalWanConfig.from_wan(WAN_PRESETS["tiny"], num_frames_per_block=1,
                                                   local_attn_size=4, sink_size=1),
}

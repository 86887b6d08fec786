"""The causal Wan as a model family (`wan_causal`), a variant of the Wan family: the same parameters,
Diffusers keys, VAE, text encoder and pipelines; FastVideo's `CausalWanTransformer3DModel` config.json
(its causal fields) and `WanCausalModel` role class. Its roles sit in Wan recipes next to bidirectional
ones (the Self-Forcing teacher and critic), and it starts from bidirectional Wan weights as well."""
from __future__ import annotations

from fvjax.families.wan.causal.config import CAUSAL_CLASS_NAME, PRESETS, CausalWanConfig
from fvjax.families.wan.config import DIFFUSERS_CLASS_NAME
from fvjax.families.wan.family import WanFamily


class WanCausalFamily(WanFamily):
    name = "wan_causal"
    display_name = "causal Wan"
    variant_of = "wan"
    diffusers_class_name = CAUSAL_CLASS_NAME
    model_label = "causal Wan2.1 T2V transformer"
    fastvideo_targets = ("fastvideo.train.models.wan.WanCausalModel",
                         "fastvideo.train.models.wan.wan_causal.WanCausalModel")
    presets = PRESETS

    @property
    def accepted_classes(self) -> dict[str, str]:
        # Stage A (KD / ODE init) starts the causal student from the bidirectional Wan2.1 weights.
        return {CAUSAL_CLASS_NAME: self.label, DIFFUSERS_CLASS_NAME: "Wan2.1 T2V transformer"}

    def config_from_diffusers(self, raw: dict, where: object) -> CausalWanConfig:
        return CausalWanConfig.from_diffusers_config(raw, where=where)

    def config_to_diffusers(self, config: CausalWanConfig) -> dict:
        return config.to_diffusers_config()

    def describe(self, config: CausalWanConfig) -> str:
        window = "global attention" if config.local_attn_size == -1 else \
            f"window {config.local_attn_size} frames, {config.sink_size} sink"
        return f"{super().describe(config)}, causal blocks of {config.num_frames_per_block} frames, {window}"

    def config_summary(self, config: CausalWanConfig) -> str:
        return (f"{super().config_summary(config)}, num_frames_per_block={config.num_frames_per_block}, "
                f"local_attn_size={config.local_attn_size}, sink_size={config.sink_size}")

    def build_model(self, config: CausalWanConfig, *, rngs, param_dtype, dtype, remat_policy: str = "none",
                    attention_backend: str = "auto"):
        from fvjax.families.wan.causal.transformer import CausalWanTransformer

        if not isinstance(config, CausalWanConfig):     # bidirectional weights' config: the causal defaults
            config = CausalWanConfig.from_wan(config)
        return CausalWanTransformer(config, rngs=rngs, param_dtype=param_dtype, dtype=dtype,
                                    remat_policy=remat_policy, attention_backend=attention_backend)

    def load_stream_decoder(self, pipeline: str, dtype=None, *, where: object = "path"):
        """A `fvjax.inference.streaming.StreamingDecoder`: the causal VAE decoding chunk by chunk."""
        from fvjax.families.wan.vae.latents import denormalize_latents
        from fvjax.inference.streaming import StreamingDecoder

        return StreamingDecoder(self.load_vae(pipeline, dtype, where=where), denormalize_latents)

    def forward_flops(self, config: CausalWanConfig, latent_shape, text_len: int) -> float:
        """The bidirectional count with the self-attention score/value term (4 N^2 D per layer) scaled by
        the fraction of (query, key) pairs the full-sequence block-causal pattern keeps."""
        from fvjax.families.wan.causal.attention import key_ranges
        from fvjax.families.wan.causal.config import block_bounds

        dense = super().forward_flops(config, latent_shape, text_len)
        frames = latent_shape[1]
        bounds = block_bounds(frames, config.num_frames_per_block, remainder_first=False)
        kept = sum((end - start) * sum(hi - lo for lo, hi in key_ranges(config, start, end)) for start, end in bounds)
        _, _, height, width = latent_shape
        n = frames * (height // config.patch_size[1]) * (width // config.patch_size[2])
        attention = config.num_layers * 4 * n * n * config.inner_dim
        return float(dense - attention * (1 - kept / frames ** 2))


WAN_CAUSAL = WanCausalFamily()

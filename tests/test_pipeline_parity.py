"""fvjax.inference.sampling.denoise against diffusers' WanPipeline (the numerical oracle), fp32, tiny random DiT.

The same transformer weights (Diffusers' model saved in Diffusers format, read back through
fvjax.load_transformer, the real loading path), the same prompt embeddings (zero-padded past each real
length, as WanPipeline pads them), the same initial noise: WanPipeline(output_type="latent") and
fvjax's loop must give the same final latents. Tolerance: max abs difference <= 1e-4 of the latents'
scale (per-model-call parity is ~5e-7 of the output scale; steps compound it).
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

import fvjax
from fvjax.families.wan.config import PRESETS
from fvjax.inference.sampling import SamplerSpec, denoise, latent_shape
from wan_torch_reference import torch_model

CONFIG = dataclasses.replace(PRESETS["tiny"], num_layers=3)
FRAMES, HEIGHT, WIDTH = 5, 32, 48          # latents [16, 2, 4, 6]: H != W, two latent frames
TEXT_LEN, BATCH = 12, 2


def wan_scheduler(kind: str, shift: float):
    if kind == "unipc":   # the config Diffusers' Wan conversion writes
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       num_train_timesteps=1000, flow_shift=shift)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def padded_embeddings(rng, lengths) -> np.ndarray:
    embeds = rng.standard_normal((len(lengths), TEXT_LEN, CONFIG.text_dim)).astype(np.float32)
    for row, length in enumerate(lengths):
        embeds[row, length:] = 0.0
    return embeds


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    reference = torch_model(CONFIG, seed=3)
    directory = tmp_path_factory.mktemp("pipeline") / "transformer"
    reference.save_pretrained(directory)
    return reference, fvjax.load_transformer(directory)


@pytest.mark.parametrize("kind,steps,guidance,shift", [("unipc", 6, 5.0, 3.0), ("euler", 5, 4.0, 5.0),
                                                       ("unipc", 3, 1.0, 8.0)])
def test_final_latents_equal_wan_pipeline(models, kind, steps, guidance, shift):
    reference, ours = models
    rng = np.random.default_rng(7)
    noise = rng.standard_normal((BATCH, *latent_shape(FRAMES, HEIGHT, WIDTH, CONFIG.in_channels))).astype(np.float32)
    context, negative = padded_embeddings(rng, [5, TEXT_LEN]), padded_embeddings(rng, [3, 9])

    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=reference,
                       scheduler=wan_scheduler(kind, shift))
    with torch.no_grad():
        expected = pipe(prompt_embeds=torch.from_numpy(context), negative_prompt_embeds=torch.from_numpy(negative),
                        latents=torch.from_numpy(noise), height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                        num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
                        return_dict=False)[0].numpy()

    spec = SamplerSpec(kind=kind, num_steps=steps, guidance_scale=guidance, shift=shift)
    got = denoise(ours.apply, ours.state, noise, jax.numpy.asarray(context), spec,
                  negative_context=jax.numpy.asarray(negative))
    got = np.asarray(got)
    assert got.shape == expected.shape == noise.shape
    err = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    print(f"{kind} {steps} steps, guidance {guidance}, shift {shift}: relative max error {err:.2e}")
    assert err <= 1e-4, err


def test_dmd_sampler_is_the_few_step_chain_of_the_student(models):
    """The dmd sampler: x0 predictions at each listed timestep, re-noised in between, conditional only; it
    equals running DMD2's own few_step_sample on the same model (the training-time definition)."""
    from fvjax.schedulers.few_step import few_step_sample
    from fvjax.schedulers.few_step import NoiseLevels

    _, ours = models
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((1, *latent_shape(FRAMES, HEIGHT, WIDTH, CONFIG.in_channels))).astype(np.float32)
    context = jax.numpy.asarray(padded_embeddings(rng, [7]))
    steps, key = (1000.0, 757.0, 522.0), jax.random.key(5)
    got = denoise(ours.apply, ours.state, noise, context, SamplerSpec(kind="dmd", denoising_steps=steps, shift=8.0),
                  key=key)
    levels = NoiseLevels(8.0)

    def x0_fn(state, x, t):
        velocity = ours.apply(state, x, jax.numpy.broadcast_to(t, (x.shape[0],)), context)
        return levels.x0_from_velocity(x, velocity, t)

    expected = few_step_sample(x0_fn, ours.state, jax.numpy.asarray(noise), jax.numpy.asarray(steps), levels, key)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(got), noise)

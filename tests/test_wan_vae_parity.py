"""Parity of fvjax's WanVAE with diffusers.AutoencoderKLWan (fp32, random weights), loaded the real way:
the Diffusers model is saved with save_pretrained and read back through `load_vae`.

Tolerance: max abs error <= 1e-4 x the output's scale (max |reference|), for encode (posterior mean and
clamped logvar) and decode (clamped video). Measured on this CPU (tiny preset, 1-13 frames): encode
~1e-6 relative, decode ~5e-6 relative (summation order of the convolutions; Diffusers runs the same
chunks). bf16 weights and compute (not asserted here): ~2% (encode) / ~8% (decode) vs the fp32
reference with these random weights, against 1.6% / 6% for Diffusers' own bf16 model.
"""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from fvjax.families.wan.vae import VAE_PRESETS, WanVAEConfig, load_vae
from fvjax.families.wan.vae.latents import denormalize_latents, normalize_latents, sample_posterior
from vae_torch_reference import save_vae, torch_vae

TOL = 1e-4  # of the output's scale
TINY = VAE_PRESETS["tiny"]
# One residual block per level and a different width: the other layout of the key map, run with XLA's
# 3-D convolution instead of the per-tap 2-D convolutions that the CPU default uses.
SLIM = WanVAEConfig(base_dim=4, num_res_blocks=1, dim_mult=(1, 2, 2, 3))
H, W = 24, 40  # H != W; latent 3 x 5


@pytest.fixture(scope="module", autouse=True)
def torch_single_thread():
    # The reference numbers do not depend on it, but on the shared 2-core CI PyTorch's OpenMP threads
    # spin against the other jobs: a tiny decode takes 10 s with 2 threads and 0.25 s with 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = torch_vae(TINY, seed=0, logvar_bias=40.0)  # logvar beyond [-30, 20] on 4 channels: the clamp
    return model, load_vae(save_vae(model, tmp_path_factory.mktemp("vae_tiny")))


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    model = torch_vae(SLIM, seed=1)
    return model, load_vae(save_vae(model, tmp_path_factory.mktemp("vae_slim")), conv_impl="conv3d")


def rel_err(ours, ref) -> float:
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def check_encode(models, frames: int, seed: int):
    torch_model, vae = models
    video = np.random.default_rng(seed).uniform(-1, 1, (2, 3, frames, H, W)).astype(np.float32)
    with torch.no_grad():
        posterior = torch_model.encode(torch.from_numpy(video)).latent_dist
    mean, logvar = vae.encode(video)
    assert mean.shape == logvar.shape == (2, vae.config.z_dim, 1 + (frames - 1) // 4, H // 8, W // 8)
    assert mean.dtype == logvar.dtype == np.float32
    assert rel_err(mean, posterior.mean.numpy()) <= TOL
    assert rel_err(logvar, posterior.logvar.numpy()) <= TOL
    return np.asarray(logvar)


def check_decode(models, latent_frames: int, seed: int):
    torch_model, vae = models
    z = np.random.default_rng(seed).standard_normal((2, vae.config.z_dim, latent_frames, H // 8, W // 8),
                                                    dtype=np.float32)
    with torch.no_grad():
        ref = torch_model.decode(torch.from_numpy(z)).sample.numpy()
    video = vae.decode(z)
    assert video.shape == ref.shape == (2, 3, 1 + 4 * (latent_frames - 1), H, W)
    # The clamp to [-1, 1] must not hide the comparison: most values lie inside.
    assert np.mean(np.abs(ref) >= 1.0) < 0.05
    assert np.abs(np.asarray(video)).max() <= 1.0
    assert rel_err(video, ref) <= TOL


@pytest.mark.parametrize("frames", [1, 5, 9, 13])
def test_encode_matches_diffusers(tiny, frames):
    logvar = check_encode(tiny, frames, seed=frames)
    assert logvar[:, :2].max() == 20.0 and logvar[:, 2:4].min() == -30.0  # the clamp took effect


@pytest.mark.parametrize("latent_frames", [1, 2, 3, 4])  # 1, 5, 9, 13 video frames
def test_decode_matches_diffusers(tiny, latent_frames):
    check_decode(tiny, latent_frames, seed=100 + latent_frames)


class Jitted:
    """encode / decode traced inside one jax.jit each (the later chunks then run under a lax.scan), the
    way the generation and preprocessing code calls them."""

    def __init__(self, vae):
        graphdef, state = nnx.split(vae)
        self.config = vae.config
        self.encode = functools.partial(jax.jit(lambda st, x: nnx.merge(graphdef, st).encode(x)), state)
        self.decode = functools.partial(jax.jit(lambda st, z: nnx.merge(graphdef, st).decode(z)), state)


def test_traced_encode_and_decode_match_diffusers(tiny):
    torch_model, vae = tiny
    check_encode((torch_model, Jitted(vae)), 9, seed=21)
    check_decode((torch_model, Jitted(vae)), 3, seed=22)


def test_slim_config_with_xla_conv3d_matches_diffusers(slim):
    check_encode(slim, 9, seed=7)
    check_decode(slim, 3, seed=8)


def test_frame_and_size_rules(tiny):
    _, vae = tiny
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(np.zeros((1, 3, 6, H, W), np.float32))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(np.zeros((1, 3, 5, 20, W), np.float32))
    with pytest.raises(ValueError, match="latents must be"):
        vae.decode(np.zeros((1, 4, 2, 3, 5), np.float32))


def test_latent_normalisation_matches_the_wan_pipeline():
    z = np.random.default_rng(3).standard_normal((2, 16, 3, 2, 4), dtype=np.float32) * 3
    mean = torch.tensor(TINY.latents_mean).view(1, 16, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(TINY.latents_std).view(1, 16, 1, 1, 1)
    ref_norm = ((torch.from_numpy(z) - mean) * inv_std).numpy()  # pipeline_wan_i2v: prepare_latents
    ref_raw = (torch.from_numpy(z) / inv_std + mean).numpy()  # pipeline_wan: before vae.decode
    np.testing.assert_allclose(normalize_latents(z, TINY), ref_norm, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(denormalize_latents(z, TINY), ref_raw, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(denormalize_latents(normalize_latents(z, TINY), TINY), z, rtol=1e-6, atol=1e-5)


def test_sample_posterior_has_the_posterior_moments():
    mean = np.linspace(-2, 2, 16, dtype=np.float32).reshape(1, 16, 1, 1, 1)
    logvar = np.linspace(-3, 1, 16, dtype=np.float32).reshape(1, 16, 1, 1, 1)
    mean, logvar = (np.broadcast_to(a, (1, 16, 1, 64, 64)) for a in (mean, logvar))
    draws = np.asarray(sample_posterior(mean, logvar, jax.random.key(0)))
    std = np.exp(0.5 * logvar[0, :, 0, 0, 0])
    # 4096 draws per channel: the standard error of the mean is std / 64.
    np.testing.assert_allclose(draws.mean(axis=(0, 2, 3, 4)), mean[0, :, 0, 0, 0], atol=5 * std.max() / 64)
    np.testing.assert_allclose(draws.std(axis=(0, 2, 3, 4)), std, rtol=0.05)
    assert not np.array_equal(draws, np.asarray(sample_posterior(mean, logvar, jax.random.key(1))))

"""Flow matching against Diffusers' FlowMatchEulerDiscreteScheduler and the densities' closed forms."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusers import FlowMatchEulerDiscreteScheduler
from scipy import special, stats

from fvjax.schedulers import flow_matching as fm

# Kolmogorov-Smirnov with n = 20000 samples: the 0.1% critical value is 1.95 / sqrt(n) = 0.0138.
KS_SAMPLES = 20000
KS_CRITICAL = 1.95 / math.sqrt(KS_SAMPLES)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 8.0])
def test_training_table_matches_diffusers(shift):
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    table = fm.training_table(shift)
    np.testing.assert_allclose(table.sigmas, ref.sigmas.numpy(), rtol=2e-7, atol=0)
    np.testing.assert_allclose(table.timesteps, ref.timesteps.numpy(), rtol=2e-7, atol=0)
    assert table.sigmas.dtype == np.float32 and table.sigmas.shape == (1000,)


def test_shift_sigmas_formula():
    u = np.linspace(0, 1, 11)
    np.testing.assert_allclose(fm.shift_sigmas(u, 3.0), 3 * u / (1 + 2 * u))
    np.testing.assert_allclose(fm.shift_sigmas(u, 1.0), u)


def _ks(samples, cdf):
    return stats.kstest(np.asarray(samples, np.float64), cdf).statistic


def test_uniform_density():
    u = fm.sample_u(jax.random.key(0), (KS_SAMPLES,), "uniform")
    assert _ks(u, lambda x: np.clip(x, 0, 1)) < KS_CRITICAL
    # FastVideo treats every other scheme name as uniform.
    assert jnp.array_equal(u, fm.sample_u(jax.random.key(0), (KS_SAMPLES,), "sigma_sqrt"))


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (0.5, 0.7)])
def test_logit_normal_density(mean, std):
    u = fm.sample_u(jax.random.key(1), (KS_SAMPLES,), "logit_normal", logit_mean=mean, logit_std=std)
    cdf = lambda x: stats.norm.cdf((special.logit(np.clip(x, 1e-12, 1 - 1e-12)) - mean) / std)
    assert _ks(u, cdf) < KS_CRITICAL


@pytest.mark.parametrize("scale", [1.29, 0.5])
def test_mode_density(scale):
    u = fm.sample_u(jax.random.key(2), (KS_SAMPLES,), "mode", mode_scale=scale)

    def u_of_r(r):
        return 1 - r - scale * (np.cos(np.pi * r / 2) ** 2 - 1 + r)

    def cdf(x):
        # u(r) decreases in r for these scales, so P(U <= x) = 1 - r*(x) with u(r*) = x; bisection.
        lo, hi = np.zeros_like(x), np.ones_like(x)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = u_of_r(mid) > x
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return 1 - (lo + hi) / 2

    assert _ks(u, cdf) < KS_CRITICAL
    # A wrong density (uniform) must fail the same test, or the check proves nothing.
    assert _ks(fm.sample_u(jax.random.key(2), (KS_SAMPLES,), "uniform"), cdf) > KS_CRITICAL


def test_sample_timesteps_indexes_the_table():
    table = fm.training_table(3.0)
    s = fm.sample_timesteps(jax.random.key(3), 64, table, "logit_normal")
    u = fm.sample_u(jax.random.key(3), (64,), "logit_normal")
    idx = np.floor(np.asarray(u) * 1000).astype(np.int32)
    np.testing.assert_array_equal(s.index, idx)
    np.testing.assert_array_equal(s.timestep, table.timesteps[idx])
    np.testing.assert_array_equal(s.sigma, table.sigmas[idx])
    assert s.index.dtype == jnp.int32 and s.sigma.dtype == jnp.float32


def test_noising_targets_and_losses():
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    x0 = jax.random.normal(k1, (3, 16, 2, 4, 4))
    eps = jax.random.normal(k2, x0.shape)
    sigma = jnp.array([0.1, 0.5, 0.95])
    x_t = fm.add_noise(x0, eps, sigma)
    np.testing.assert_allclose(x_t[1], 0.5 * x0[1] + 0.5 * eps[1], rtol=1e-6)
    v = fm.velocity_target(x0, eps)
    np.testing.assert_allclose(fm.x0_from_velocity(x_t, v, sigma), x0, atol=1e-5)
    assert float(fm.flow_matching_loss(v, x0, eps, x_t, sigma)) == 0.0
    assert float(fm.flow_matching_loss(v, x0, eps, x_t, sigma, precondition_outputs=True)) < 1e-10

    pred = v + 0.1 * jax.random.normal(k3, x0.shape)
    err = np.asarray(pred - v, np.float64)
    np.testing.assert_allclose(fm.flow_matching_loss(pred, x0, eps, x_t, sigma), np.mean(err**2), rtol=1e-5)
    # x0 variant: x0_hat - x0 = -sigma (v_pred - v), so the loss weighs each sample by sigma^2.
    s = np.asarray(sigma)[:, None, None, None, None]
    np.testing.assert_allclose(fm.flow_matching_loss(pred, x0, eps, x_t, sigma, True),
                               np.mean((s * err) ** 2), rtol=1e-4)

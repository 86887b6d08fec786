"""UniPCMultistepScheduler (Diffusers) in Wan's configuration, as tables plus a pure multistep step.

Wan's config (wan_architecture.md §4.1): prediction_type "flow_prediction", use_flow_sigmas, solver_order 2,
solver_type "bh2", predict_x0, lower_order_final, final_sigmas_type "zero", no disabled corrector,
flow_shift s. Only this configuration is built; it is what every Wan Diffusers repo ships.

set_timesteps(N): sigma = linspace(1, 1/1000, N + 1)[:-1] (float64), shifted; a first sigma within 1e-6 of 1 is
lowered by 1e-6 (so log(1 - sigma) stays finite); model timesteps = int64(sigma * 1000) (truncated: the first
is 999); sigmas cast to float32 with a terminal 0.

Step i (alpha = 1 - sigma, lambda = log alpha - log sigma, everything on x0 predictions m = x - sigma v):
- corrector (i > 0, UniC): refines the sample it is given with the step-(i-1) coefficients, the order used at
  step i - 1, and the new m;
- predictor (UniP): order_i = min(2, i + 1, N - i) (warm-up first step, lower-order last step).
All scalar coefficients depend only on the sigma table, so they are computed once here in float32, in
Diffusers' operation order; the step only indexes them, which keeps it traceable inside lax.scan.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fvjax.schedulers import flow_matching as fm

SOLVER_ORDER = 2
_SIGMA_ONE_EPS = 1e-6


class UniPCState(NamedTuple):
    """Solver memory carried between steps (float32, the sample's shape)."""

    x0_last: jax.Array      # the previous step's x0 prediction (Diffusers model_outputs[-1])
    x0_before: jax.Array    # the one before it (model_outputs[-2])
    last_sample: jax.Array  # the (corrected) sample the previous predictor started from


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class UniPCMultistep:
    """N-step tables; every per-step array is [N] float32 unless noted.

    timesteps: the model's timestep input (integers, stored as float32); sigmas: [N + 1].
    Predictor of step i (sigma_i -> sigma_{i+1}): x' = ratio x - coef m0 - coef (rho_p D1),
    D1 = (m_{i-1} - m0) / rk, coef = alpha_{i+1} expm1(-h) (bh2: Diffusers' alpha_t h_phi_1 and alpha_t B_h
    are the same number). The corrector at step i reuses step i - 1's ratio / coef / rk with weights
    rho_c_prev (on D1) and rho_c_new (on m_i - m0)."""

    timesteps: jax.Array
    sigmas: jax.Array
    ratio: jax.Array
    coef: jax.Array
    rk: jax.Array
    rho_p: jax.Array
    rho_c_prev: jax.Array
    rho_c_new: jax.Array

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[0]

    def init_state(self, sample: jax.Array) -> UniPCState:
        zeros = jnp.zeros(sample.shape, jnp.float32)
        return UniPCState(zeros, zeros, zeros)

    def step(self, state: UniPCState, index: jax.Array, model_output: jax.Array, sample: jax.Array):
        """(x_{i+1}, state) from the velocity `model_output` at step `index` (traceable int)."""
        x = sample.astype(jnp.float32)
        x0 = x - self.sigmas[index] * model_output.astype(jnp.float32)   # convert_model_output

        prev = jnp.maximum(index - 1, 0)
        corrected = _update(self, prev, state.last_sample, state.x0_last, state.x0_before,
                            self.rho_c_prev[prev], self.rho_c_new[prev] * (x0 - state.x0_last))
        x = jnp.where(index > 0, corrected, x)

        new_state = UniPCState(x0_last=x0, x0_before=state.x0_last, last_sample=x)
        x_next = _update(self, index, x, x0, state.x0_last, self.rho_p[index], 0.0)
        return x_next, new_state


def _update(tables: UniPCMultistep, i, x, m0, m_older, rho_d1, extra):
    """x' = ratio_i x - coef_i m0 - coef_i (rho_d1 (m_older - m0) / rk_i + extra), the shared form of
    the UniP predictor (extra = 0) and the UniC corrector (extra = rho (m_new - m0))."""
    base = tables.ratio[i] * x - tables.coef[i] * m0
    d1 = (m_older - m0) / tables.rk[i]
    return base - tables.coef[i] * (rho_d1 * d1 + extra)


def _flow_sigmas(num_steps: int, shift: float, num_train_timesteps: int) -> tuple[np.ndarray, np.ndarray]:
    sigmas = np.linspace(1, 1 / num_train_timesteps, num_steps + 1)[:-1]
    sigmas = fm.shift_sigmas(sigmas, shift)
    if np.fabs(sigmas[0] - 1) < _SIGMA_ONE_EPS:
        sigmas[0] -= _SIGMA_ONE_EPS
    timesteps = (sigmas * num_train_timesteps).astype(np.int64)   # truncation, from the float64 sigmas
    return timesteps, np.concatenate([sigmas, [0.0]]).astype(np.float32)


def _log32(x: np.float32) -> np.float32:
    """float32 log, correctly rounded (via float64) as torch's scalar log is; numpy's float32 log can be a
    few ulp off, which the small differences of logs below would amplify."""
    with np.errstate(divide="ignore"):
        return np.float32(np.log(np.float64(x)))


def _expm1_32(x: np.float32) -> np.float32:
    return np.float32(np.expm1(np.float64(x)))


def _lambda(sigma: np.float32) -> np.float32:
    """log alpha - log sigma in float32 (+inf at sigma = 0)."""
    return _log32(np.float32(1) - sigma) - _log32(sigma)


def step_orders(num_steps: int) -> np.ndarray:
    """The predictor order of each step: warm-up from 1, and lower_order_final's drop at the end."""
    i = np.arange(num_steps)
    return np.minimum(np.minimum(SOLVER_ORDER, num_steps - i), i + 1).astype(np.int32)


def unipc_multistep(num_steps: int, shift: float = 1.0,
                    num_train_timesteps: int = fm.NUM_TRAIN_TIMESTEPS) -> UniPCMultistep:
    """Diffusers' UniPCMultistepScheduler(Wan config, flow_shift=shift).set_timesteps(num_steps)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    timesteps, sigmas = _flow_sigmas(num_steps, shift, num_train_timesteps)
    orders = step_orders(num_steps)
    f32 = np.float32
    rows = {k: np.zeros(num_steps, f32) for k in ("ratio", "coef", "rk", "rho_p",
                                                   "rho_c_prev", "rho_c_new")}
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(num_steps):
            sigma_t, sigma_s0 = sigmas[i + 1], sigmas[i]
            alpha_t = f32(1) - sigma_t
            h = _lambda(sigma_t) - _lambda(sigma_s0)
            hh = -h                                      # predict_x0
            h_phi_1 = _expm1_32(hh)
            b_h = h_phi_1                                # bh2: B(h) = expm1(hh)
            rows["ratio"][i] = sigma_t / sigma_s0
            rows["coef"][i] = alpha_t * h_phi_1
            if orders[i] == 2:
                rk = (_lambda(sigmas[i - 1]) - _lambda(sigma_s0)) / h
                rows["rk"][i] = rk
                rows["rho_p"][i] = 0.5                   # Diffusers fixes the order-2 predictor weight
            else:
                rows["rk"][i] = 1.0                      # unused (rho 0); keeps D1 finite
            # The corrector at step i + 1 solves with this step's order.
            h_phi_k = h_phi_1 / hh - f32(1)
            b1 = h_phi_k * f32(1) / b_h
            h_phi_k = h_phi_k / hh - f32(0.5)
            b2 = h_phi_k * f32(2) / b_h
            if orders[i] == 2:
                rho = np.linalg.solve(np.array([[1, 1], [rows["rk"][i], 1]], f32), np.array([b1, b2], f32))
                rows["rho_c_prev"][i], rows["rho_c_new"][i] = rho[0], rho[1]
            else:
                rows["rho_c_new"][i] = 0.5
    # device_put, not jnp.asarray: that compiles a copy program per table shape
    tables = {k: jax.device_put(v) for k, v in rows.items()}
    return UniPCMultistep(timesteps=jax.device_put(timesteps.astype(np.float32)), sigmas=jax.device_put(sigmas),
                          **tables)

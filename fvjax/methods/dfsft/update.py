"""Diffusion-forcing SFT of a causal student (FastVideo's DiffusionForcingSFTMethod).

Per sample and per chunk of `chunk_size` latent frames (from the first frame, the last one cut short) an index
into the student's training table, uniform in DFSFTConfig.index_range(); each frame gets its chunk's
timestep t [b, T] and sigma: x_t = (1 - sigma) x0 + sigma eps per frame. One block-causal student forward;
per-frame MSE over (C, H, W) of v against eps - x0 (pred_type x0: x_t - sigma v against x0), weighted by a
fixed Gaussian over the index (exp(-2 ((i - N/2) / N)^2), shifted to minimum 0, normalised to mean 1 over the
N table entries: mid-noise levels count most), mean over frames and samples, float32.

Teacher forcing (FastVideo's TeacherForcingSFTMethod, a DFSFT subclass that only passes `clean_x`): the same
draws and loss; the forward is the causal Wan's `teacher_forcing`, whose noisy block i attends to the clean
latents of the blocks before it instead of their noisy copies. The loss keeps FastVideo's name, dfsft_loss.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from fvjax.errors import fail
from fvjax.keys import standard_normal
from fvjax.methods.common import one_role_update, purpose_key
from fvjax.methods.dfsft.config import DFSFTConfig
from fvjax.methods.finetune.config import X0
from fvjax.methods.kd.update import block_step_indices
from fvjax.schedulers import flow_matching as fm
from fvjax.training.roles import RoleModel


def index_weights(num_train_timesteps: int) -> np.ndarray:
    """float32 [N]: FastVideo's Gaussian loss weight per table index (mean 1)."""
    n = float(num_train_timesteps)
    x = np.arange(num_train_timesteps, dtype=np.float32)
    y = np.exp(-2 * ((x - n / 2) / n) ** 2).astype(np.float32)
    shifted = y - y.min()
    return (shifted * (n / shifted.sum())).astype(np.float32)


def check_chunk_size(cfg: DFSFTConfig, student_config) -> None:
    expected = getattr(student_config, "num_frames_per_block", None)
    if expected is not None and expected != cfg.chunk_size:
        fail(None, "method_config.chunk_size", f"is {cfg.chunk_size} but the causal student's num_frames_per_block "
             f"is {expected}; they must be equal (FastVideo checks the same)")


def check_teacher_forcing(config, role: str = "student") -> None:
    """Teacher forcing needs a global (unwindowed) causal model in that role."""
    window = getattr(config, "local_attn_size", -1)
    if window != -1:
        fail(None, f"models.{role}", f"has local_attn_size {window} (a window), but teacher forcing attends to the "
             f"whole clean history and FastVideo has no windowed teacher forcing; use a global {role} "
             "(local_attn_size -1)")


def make_teacher_forcing_update(cfg: DFSFTConfig, models: dict[str, RoleModel], compute_dtype) -> Callable:
    return make_update(cfg, models, compute_dtype, teacher_forcing=True)


def make_update(cfg: DFSFTConfig, models: dict[str, RoleModel], compute_dtype, teacher_forcing: bool = False
                ) -> Callable:
    student = models["student"]
    check_chunk_size(cfg, student.config)
    if teacher_forcing:
        check_teacher_forcing(student.config)
    table = fm.training_table(cfg.flow_shift, cfg.num_train_timesteps)
    weights = jnp.asarray(index_weights(cfg.num_train_timesteps))
    low, high = cfg.index_range()

    def loss_fn(params, batch, key):
        x0 = batch["latents"].astype(jnp.float32)
        b, frames = x0.shape[0], x0.shape[2]
        index = block_step_indices(purpose_key(key, "timestep"), b, frames, cfg.chunk_size, low, high)
        t = jnp.asarray(table.timesteps)[index]                        # [b, T]
        sigma = jnp.asarray(table.sigmas)[index][:, None, :, None, None]
        noise = standard_normal(purpose_key(key, "noise"), x0.shape)
        x_t = (1 - sigma) * x0 + sigma * noise
        text = batch["text_embeds"].astype(compute_dtype)
        if teacher_forcing:
            pred = student.module(params).teacher_forcing(x_t.astype(compute_dtype), t, text,
                                                          x0.astype(compute_dtype))
        else:
            pred = student.apply(params, x_t.astype(compute_dtype), t, text)
        pred = pred.astype(jnp.float32)
        if cfg.pred_type == X0:
            error = (x_t - sigma * pred) - x0
        else:
            error = pred - (noise - x0)
        per_frame = jnp.mean(error ** 2, axis=(1, 3, 4))               # [b, T]
        loss = jnp.mean(per_frame * weights[index])
        return loss, {"student/timestep_mean": jnp.mean(t)}

    return one_role_update(student, loss_fn, "dfsft_loss")

"""The optimizer of a trainable role, as FastVideo builds it: AdamW (eps 1e-8) + the lr schedules of
TrainingArgs + gradient clipping by global norm; plus EMA and gradient accumulation helpers.

Schedules follow FastVideo's `get_scheduler` (a copy of `diffusers.optimization.get_scheduler` with
`cosine_with_min_lr` added). Like torch's LambdaLR they are functions of the number of optimizer updates
already taken, `count` (0 for the first update), and return base_lr * multiplier(count):

- constant: 1.
- constant_with_warmup: count / warmup during warmup, then 1.
- linear: warmup, then max(0, (N - count) / (N - warmup)), N = max_train_steps.
- cosine: warmup, then max(0, 0.5 (1 + cos(pi * 2 * 0.5 * progress))), progress = (count - warmup) / (N - warmup).
  (FastVideo does not pass lr_num_cycles to cosine, so it is always a half cosine.)
- cosine_with_restarts: warmup, then 0.5 (1 + cos(pi * ((lr_num_cycles * progress) % 1))), 0 once progress >= 1.
- cosine_with_min_lr: warmup, then max(min_lr_ratio, half cosine) — a floor, not a rescaling (FastVideo).
- polynomial: warmup, then ((lr - 1e-7) (1 - progress) ** lr_power + 1e-7) / lr, 1e-7 / lr after N.
- piecewise_constant: `lr_step_rules` "m1:s1,m2:s2,...,m_last" -> m_i while count < s_i (first match in
  ascending s), else m_last.
Note TrainingArgs' defaults lr_num_cycles = 0 and lr_power = 0.0 make cosine_with_restarts and polynomial
constant (until N) — faithful to FastVideo; recipes that want decay set them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fvjax.errors import UserError

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
             "cosine_with_min_lr", "polynomial", "piecewise_constant")
_NEEDS_TOTAL_STEPS = ("linear", "cosine", "cosine_with_restarts", "cosine_with_min_lr", "polynomial")
POLYNOMIAL_LR_END = 1e-7  # diffusers' default lr_end, which FastVideo never overrides


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """One trainable role's optimizer, with TrainingArgs' field names (defaults = TrainingArgs defaults)."""

    learning_rate: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    lr_num_cycles: float = 0
    lr_power: float = 0.0
    min_lr_ratio: float = 0.5
    lr_step_rules: str | None = None
    max_train_steps: int = 0
    max_grad_norm: float = 0.0          # <= 0 disables clipping
    ema_decay: float = 0.0              # <= 0 disables EMA
    ema_start_step: int = 0

    def check(self, where: object = "recipe", prefix: str = "training") -> "OptimizerConfig":
        """Raise UserError (naming `where` and `prefix.field`) for values that cannot work."""
        def bad(field, msg):
            raise UserError(where, f"{prefix}.{field}" if prefix else field, msg)

        if not (self.learning_rate > 0):
            bad("learning_rate", f"must be > 0 for a trainable role, got {self.learning_rate}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad("betas", f"must be two numbers in [0, 1), got {self.betas}")
        if self.lr_scheduler not in SCHEDULES:
            bad("lr_scheduler", f"unknown schedule {self.lr_scheduler!r}; choose one of {', '.join(SCHEDULES)}")
        if self.lr_warmup_steps < 0:
            bad("lr_warmup_steps", f"must be >= 0, got {self.lr_warmup_steps}")
        if self.lr_scheduler in _NEEDS_TOTAL_STEPS and self.max_train_steps <= 0:
            bad("max_train_steps", f"lr_scheduler {self.lr_scheduler!r} needs max_train_steps > 0")
        if self.lr_scheduler == "polynomial" and not self.learning_rate > POLYNOMIAL_LR_END:
            bad("learning_rate", f"polynomial decays to {POLYNOMIAL_LR_END}; learning_rate must be larger")
        if self.lr_scheduler == "piecewise_constant":
            parse_step_rules(self.lr_step_rules, where, f"{prefix}.lr_step_rules" if prefix else "lr_step_rules")
        if not 0 <= self.ema_decay < 1:
            bad("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        return self


def parse_step_rules(rules: str | None, where: object = "recipe", key: str = "training.lr_step_rules"):
    """'1:10,0.1:20,0.005' -> ([(10, 1.0), (20, 0.1)] sorted by step, 0.005), as diffusers parses it."""
    if not rules:
        raise UserError(where, key, "piecewise_constant needs step rules like '1:10,0.1:20,0.005'")
    try:
        parts = rules.split(",")
        pairs = sorted((int(s), float(m)) for m, s in (p.split(":") for p in parts[:-1]))
        return pairs, float(parts[-1])
    except ValueError:
        raise UserError(where, key, f"cannot parse step rules {rules!r}; expected 'm1:s1,m2:s2,...,m_last'")


def _warmup_then(decay: Callable, warmup: int) -> Callable:
    def multiplier(count):
        warm = count / max(1, warmup)
        return jnp.where(count < warmup, warm, decay(count))
    return multiplier


def lr_multiplier(cfg: OptimizerConfig) -> Callable[[jax.Array], jax.Array]:
    """count -> lr / learning_rate, traceable (count may be an int32 array)."""
    name, w, n = cfg.lr_scheduler, cfg.lr_warmup_steps, cfg.max_train_steps

    def progress(count):
        return (count - w) / max(1, n - w)

    if name == "constant":
        return lambda count: jnp.ones_like(jnp.asarray(count, jnp.float32))
    if name == "constant_with_warmup":
        return _warmup_then(lambda c: jnp.ones_like(c, jnp.float32), w)
    if name == "linear":
        return _warmup_then(lambda c: jnp.maximum(0.0, (n - c) / max(1, n - w)), w)
    if name == "cosine":
        return _warmup_then(lambda c: jnp.maximum(0.0, 0.5 * (1 + jnp.cos(math.pi * progress(c)))), w)
    if name == "cosine_with_min_lr":
        return _warmup_then(
            lambda c: jnp.maximum(cfg.min_lr_ratio, 0.5 * (1 + jnp.cos(math.pi * progress(c)))), w)
    if name == "cosine_with_restarts":
        def restarts(c):
            p = progress(c)
            value = jnp.maximum(0.0, 0.5 * (1 + jnp.cos(math.pi * jnp.mod(cfg.lr_num_cycles * p, 1.0))))
            return jnp.where(p >= 1.0, 0.0, value)
        return _warmup_then(restarts, w)
    if name == "polynomial":
        lr, end = cfg.learning_rate, POLYNOMIAL_LR_END

        def poly(c):
            remaining = 1 - (c - w) / (n - w) if n != w else jnp.zeros_like(c, jnp.float32)
            inside = ((lr - end) * jnp.maximum(remaining, 0.0) ** cfg.lr_power + end) / lr
            return jnp.where(c > n, end / lr, inside)
        return _warmup_then(poly, w)
    if name == "piecewise_constant":
        pairs, last = parse_step_rules(cfg.lr_step_rules)

        def piecewise(count):
            value = jnp.full_like(jnp.asarray(count, jnp.float32), last)
            for step, mult in reversed(pairs):  # the smallest threshold the count is under wins
                value = jnp.where(count < step, mult, value)
            return value
        return piecewise
    raise UserError("recipe", "training.lr_scheduler", f"unknown schedule {name!r}")


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """count -> learning rate (float32); use it for logging the lr of update `count` too."""
    multiplier = lr_multiplier(cfg)

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        return (cfg.learning_rate * multiplier(count)).astype(jnp.float32)
    return schedule


def build_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """clip_by_global_norm(max_grad_norm) when > 0, then AdamW with the schedule. Like torch's AdamW the
    decoupled weight decay is scaled by the scheduled lr. The schedule's count lives in the state, so a
    restored optimizer state resumes the schedule exactly."""
    adamw = optax.adamw(learning_rate=make_schedule(cfg), b1=cfg.betas[0], b2=cfg.betas[1], eps=cfg.eps,
                        weight_decay=cfg.weight_decay)
    if cfg.max_grad_norm and cfg.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)
    return adamw


# ---------------------------------------------------------------------------------------------- EMA

def ema_enabled(cfg: OptimizerConfig) -> bool:
    return cfg.ema_decay > 0


def ema_init(params):
    """A separate copy of the weights (so donating params never aliases the EMA)."""
    return jax.tree.map(jnp.copy, params)


def ema_update(ema, params, step, decay: float, start_step: int):
    """EMA after optimizer update number `step` (1-based: the first update is step 1).

    Legacy FastVideo creates the EMA from the current weights at ema_start_step and decays it afterwards:
    ema = decay * ema + (1 - decay) * params for step > start_step. Until then the EMA simply tracks
    the weights, which is the same thing at start_step and keeps the state's structure fixed."""
    tracking = jnp.asarray(step) <= start_step
    return jax.tree.map(
        lambda e, p: jnp.where(tracking, p.astype(e.dtype), decay * e + (1 - decay) * p.astype(e.dtype)),
        ema, params)


# ------------------------------------------------------------------------------- grad accumulation

def accumulate_gradients(loss_fn: Callable, params, micro_batches, key: jax.Array):
    """Mean loss, aux and gradients of `loss_fn(params, micro_batch, key) -> (loss, aux)` over the
    micro-batches: every leaf of `micro_batches` has a leading axis of size A (gradient accumulation
    steps), each slice along it is one micro-batch. Under lax.scan, so one micro-batch's activations
    live at a time. The loop lays the batch out as [A, B, ...] with B sharded over data parallel, so
    taking a micro-batch moves no data between devices. Micro-batch i gets fold_in(key, i); with
    A = 1 the key is passed through unchanged. As FastVideo (loss / accum, backward per micro-batch)
    the gradient is the mean of the micro-batch gradients.

    Returns ((loss, aux), grads)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    num_micro_batches = jax.tree.leaves(micro_batches)[0].shape[0]
    if num_micro_batches == 1:
        return grad_fn(params, jax.tree.map(lambda x: x[0], micro_batches), key)

    def body(carry, xs):
        i, mb = xs
        (loss, aux), grads = grad_fn(params, mb, jax.random.fold_in(key, i))
        total = jax.tree.map(jnp.add, carry, (loss, aux, grads))
        return total, None

    zero = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro_batches), key)
    (zero_loss, zero_aux), zero_grads = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
    (loss, aux, grads), _ = jax.lax.scan(body, (zero_loss, zero_aux, zero_grads),
                                         (jnp.arange(num_micro_batches), micro_batches))
    mean = lambda x: x / num_micro_batches
    return (mean(loss), jax.tree.map(mean, aux)), jax.tree.map(mean, grads)

"""`SelfForcingConfig`: DMD2's knobs (same places, same readers: fvjax/methods/dmd2/config.py; the four
whose defaults differ are read from training: too, as DMD2's are) plus the causal rollout's, which only
`method_config:` holds (FastVideo's current schema `method:` block maps
onto it; its legacy TrainingArgs spelled them differently and hard-coded some, so the older forms give
them in method_config too).

Differences from DMD2 (FastVideo main, spec fastvideo_v3_recipes.md §2.3):
- rollout_mode must be simulate (the default here);
- defaults are FastVideo main's: generator_update_interval 1, standard CFG x_u + w (x_c - x_u) with w = 1,
  score timesteps clamped to [0, 1000] only (min/max_timestep_ratio 0 and 1; FastVideo's current schema
  validates but never applies them, fvjax applies what method_config gives);
- one shift, the pipeline's flow_shift, for the student's grid, the warp and the score timesteps (there
  is no separate student_flow_shift).
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.methods.dmd2.config import CFG_FASTVIDEO, CFG_STANDARD, DMD2_PARAMS, SIMULATE, DMD2Config, _check_guidance
from fvjax.schema import fields as F
from fvjax.schema.params import METHOD, TRAINING, Param, Source

SDE, ODE = "sde", "ode"


@dataclasses.dataclass(frozen=True)
class SelfForcingConfig(DMD2Config):
    # FastVideo main's SelfForcingMethod defaults (DMD2Config's are its design branch's).
    generator_update_interval: int = 1
    real_score_guidance_scale: float = 1.0
    real_score_guidance_form: str = CFG_STANDARD      # x_u + w (x_c - x_u)
    min_timestep_ratio: float = 0.0                   # score timesteps: clamped to [0, 1000] only
    max_timestep_ratio: float = 1.0
    chunk_size: int = 3                        # latent frames per causal block (the first takes the remainder)
    student_sample_type: str = SDE             # between rollout steps: sde re-noises with fresh noise, ode
                                               # carries the noise implied by the prediction
    same_step_across_blocks: bool = False      # one exit step for all chunks (else one per chunk)
    last_step_only: bool = False               # always exit at the last step
    context_noise: float = 0.0                 # timestep of the cached context (0: the clean prediction at t=0)
    enable_gradient_in_rollout: bool = True    # False: the student gets no gradient at all
    start_gradient_frame: int = 0              # chunks starting before this latent frame give no gradient


def _check_simulate(value: str, where: object, key: str) -> None:
    if value != SIMULATE:
        fail(where, key, f"is {value!r}; Self-Forcing rolls the causal student out from noise: rollout_mode must be "
             "simulate")


def _check_positive(value: int, where: object, key: str) -> None:
    if value <= 0:
        fail(where, key, f"is {value}; must be a positive number of latent frames")


def _check_non_negative(value: float, where: object, key: str) -> None:
    if value < 0:
        fail(where, key, f"is {value}; must be >= 0")


def _check_context_noise(value: float, where: object, key: str) -> None:
    if not 0 <= value <= 1000:
        fail(where, key, f"is {value}; the context's timestep must be in [0, 1000] (0: clean)")


_DMD2_CHANGED = ("rollout_mode", "student_flow_shift", "generator_update_interval", "real_score_guidance_scale",
                 "real_score_guidance_form", "min_timestep_ratio", "max_timestep_ratio")


def _ratio(name: str, default: float) -> Param:
    return Param(name, (Source(METHOD, name, F.null_means(default, F.read_float)), Source(TRAINING, name)), default,
                 F.check_unit_interval)


# DMD2's knobs that keep DMD2's places (method_config, or training: / pipeline_config: in older forms), then
# those whose default is FastVideo main's SelfForcingMethod's (method_config only), then the rollout's.
SELF_FORCING_PARAMS: tuple[Param, ...] = tuple(p for p in DMD2_PARAMS if p.name not in _DMD2_CHANGED) + (
    # Older forms write these in training: (as DMD2's); the defaults stay FastVideo main's. A scale given
    # there is read in real_score_guidance_form (standard unless method_config says fastvideo).
    Param("generator_update_interval", (Source(METHOD, "generator_update_interval", F.read_int),
                                        Source(TRAINING, "generator_update_interval")), 1),
    Param("real_score_guidance_scale", (Source(METHOD, "real_score_guidance_scale", F.read_float),
                                        Source(TRAINING, "real_score_guidance_scale")), 1.0, _check_guidance),
    Param("real_score_guidance_form", (Source(METHOD, "real_score_guidance_form",
                                              F.choice((CFG_FASTVIDEO, CFG_STANDARD))),), CFG_STANDARD),
    _ratio("min_timestep_ratio", 0.0),
    _ratio("max_timestep_ratio", 1.0),
    Param("rollout_mode", (
        Source(METHOD, "rollout_mode", F.choice((SIMULATE, "data_latent"), aliases={"sim": SIMULATE, "data":
                                                "data_latent", "vae_latent": "data_latent"})),), SIMULATE,
          _check_simulate),
    Param("chunk_size", (Source(METHOD, "chunk_size", F.null_means(3, F.read_int)),), 3, _check_positive),
    Param("student_sample_type", (Source(METHOD, "student_sample_type", F.null_means(SDE, F.choice((SDE, ODE)))),),
          SDE),
    Param("same_step_across_blocks", (Source(METHOD, "same_step_across_blocks", F.null_means(False, F.read_bool)),),
          False),
    Param("last_step_only", (Source(METHOD, "last_step_only", F.null_means(False, F.read_bool)),), False),
    Param("context_noise", (Source(METHOD, "context_noise", F.null_means(0.0, F.read_float)),), 0.0,
          _check_context_noise),
    Param("enable_gradient_in_rollout", (Source(METHOD, "enable_gradient_in_rollout",
                                                F.null_means(True, F.read_bool)),), True),
    Param("start_gradient_frame", (Source(METHOD, "start_gradient_frame", F.null_means(0, F.read_int)),), 0,
          _check_non_negative),
)

"""`DMD2Config`: the slice of the recipe the DMD2 method reads, and where each value may be written.

Primary place is `method_config:` (Phase 3 / FastVideo's design branch). Phase-2 recipes give the same
values in `training:` (`generator_update_interval`, `real_score_guidance_scale`,
`simulate_generator_forward`, ...) and `pipeline_config:` (`dmd_denoising_steps`, `flow_shift`).
"""
from __future__ import annotations

import dataclasses

from fvjax.errors import fail
from fvjax.schema import fields as F
from fvjax.schema.params import FROM_CONTEXT, FromTraining, METHOD, PIPELINE, REQUIRED, TRAINING, Param, Source
from fvjax.schema.training_args import TRAINING_FIELDS
from fvjax.schema.pipeline_config import NUM_TRAIN_TIMESTEPS

SIMULATE, DATA_LATENT = "simulate", "data_latent"
# The teacher's CFG: FastVideo's design branch / legacy x_c + w (x_c - x_u) (the seed's recipes; w = 3.5 is
# standard CFG 4.5), or the standard x_u + w (x_c - x_u) of FastVideo's current main.
CFG_FASTVIDEO, CFG_STANDARD = "fastvideo", "standard"
ROLLOUT_ALIASES = {"sim": SIMULATE, "data": DATA_LATENT, "vae_latent": DATA_LATENT}


@dataclasses.dataclass(frozen=True)
class DMD2Config:
    rollout_mode: str = SIMULATE                      # simulate: unroll from noise; data_latent: noise data
    dmd_denoising_steps: tuple[int, ...] = (1000, 757, 522)
    generator_update_interval: int = 5                # student steps when step % interval == 0 (<=0: always)
    real_score_guidance_scale: float = 3.5            # x_real = x_c + w (x_c - x_u)
    warp_denoising_step: bool = False
    min_timestep_ratio: float = 0.2
    max_timestep_ratio: float = 0.98
    flow_shift: float = 3.0                           # the score timesteps' shift (pipeline flow_shift)
    # FastVideo's current schema: the student's own scheduler shift (models.student.flow_shift), used to
    # noise to a timestep and to warp the schedule. None: flow_shift (the design branch has one shift).
    student_flow_shift: float | None = None
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
    # The critic's optimizer (FastVideo: training.fake_score_*; its current main moves them to the method).
    fake_score_learning_rate: float = 0.0             # the loader resolves 0 to the student's learning_rate
    fake_score_betas: tuple[float, float] = (0.9, 0.999)
    fake_score_lr_scheduler: str = "constant"
    real_score_guidance_form: str = CFG_FASTVIDEO     # fastvideo: x_c + w (x_c - x_u); standard: x_u + w (x_c - x_u)
    # A precomputed negative-prompt embedding ([L, text_dim] .npy/.safetensors). "" -> the teacher's
    # pipeline text encoder encodes `negative_prompt` at start (fvjax/methods/dmd2/negative_prompt.py), else zeros.
    negative_prompt_embedding: str = ""
    negative_prompt: str | None = None                # None -> the family's default negative prompt

    @property
    def table_shift(self) -> float:
        """The shift of the student's noise table (noising, warp)."""
        return self.flow_shift if self.student_flow_shift is None else self.student_flow_shift


def _rollout_from_bool(simulate: bool) -> str:
    return SIMULATE if simulate else DATA_LATENT


def _check_steps(steps: tuple[int, ...], where: object, key: str) -> None:
    if not steps:
        fail(where, key, "must be a non-empty list of timesteps, e.g. [1000, 757, 522]")
    for i, t in enumerate(steps):
        if not 0 < t <= NUM_TRAIN_TIMESTEPS:
            fail(where, f"{key}[{i}]", f"is {t}; timesteps must be in 1..{NUM_TRAIN_TIMESTEPS}")
    if any(a <= b for a, b in zip(steps, steps[1:])):
        fail(where, key, f"must be strictly decreasing (noisiest first), got {list(steps)}")


MAX_GUIDANCE = 100.0   # FastVideo's recipes use 1 to 8; far beyond, bf16 teacher outputs overflow


def _check_guidance(value: float, where: object, key: str) -> None:
    if abs(value) > MAX_GUIDANCE:
        fail(where, key, f"is {value:g}; the teacher's guidance scale must be within +-{MAX_GUIDANCE:g} (FastVideo's "
             "recipes use 3.5 in the legacy form, 4.5 in the standard one)")


_rollout = F.choice((SIMULATE, DATA_LATENT), aliases=ROLLOUT_ALIASES)

DMD2_PARAMS: tuple[Param, ...] = (
    Param("rollout_mode", (
        Source(METHOD, "rollout_mode", _rollout),
        Source(METHOD, "simulate_generator_forward", F.read_bool, _rollout_from_bool),
        Source(TRAINING, "simulate_generator_forward", None, _rollout_from_bool, lambda m: m == SIMULATE),
    ), REQUIRED, missing_hint="set rollout_mode: simulate (data-free: the student unrolls from noise) or "
        "data_latent (the student denoises noised dataset latents); Phase-2 recipes may set "
        "training.simulate_generator_forward instead"),
    Param("dmd_denoising_steps", (
        Source(METHOD, "dmd_denoising_steps", F.int_list),
        Source(PIPELINE, "dmd_denoising_steps", None, lambda v: v),
    ), REQUIRED, _check_steps, "give the few-step schedule, e.g. [1000, 850, 700, 550, 350, 275, 200, 125]"),
    Param("generator_update_interval", (
        Source(METHOD, "generator_update_interval", F.read_int),
        Source(TRAINING, "generator_update_interval"),
    )),
    Param("real_score_guidance_scale", (
        Source(METHOD, "real_score_guidance_scale", F.read_float),
        Source(TRAINING, "real_score_guidance_scale"),
    ), check=_check_guidance),
    Param("warp_denoising_step", (
        Source(METHOD, "warp_denoising_step", F.read_bool),
        Source(TRAINING, "warp_denoising_step"),
    )),
    Param("min_timestep_ratio", (
        Source(METHOD, "min_timestep_ratio", F.null_means(0.0, F.read_float)),   # null: the full range
        Source(TRAINING, "min_timestep_ratio"),
    ), check=F.check_unit_interval),
    Param("max_timestep_ratio", (
        Source(METHOD, "max_timestep_ratio", F.null_means(1.0, F.read_float)),
        Source(TRAINING, "max_timestep_ratio"),
    ), check=F.check_unit_interval),
    Param("flow_shift", (Source(PIPELINE, "flow_shift"),), FROM_CONTEXT, F.check_flow_shift),
    Param("student_flow_shift", (Source(METHOD, "student_flow_shift", F.optional(F.read_float)),), None,
          lambda v, where, key: v is None or F.check_flow_shift(v, where, key)),
    # 0 (or absent) is the student's learning rate, resolved here so that every form reads the same value.
    Param("fake_score_learning_rate", (
        Source(METHOD, "fake_score_learning_rate", F.read_float),
        Source(TRAINING, "fake_score_learning_rate"),
    ), FromTraining("learning_rate", also_for=(0,))),
    # FastVideo's design branch: the critic's betas fall back to the student's `betas` when not given.
    Param("fake_score_betas", (
        Source(METHOD, "fake_score_betas", F.betas),
        Source(TRAINING, "fake_score_betas"),
    ), FromTraining("betas")),
    Param("fake_score_lr_scheduler", (
        Source(METHOD, "fake_score_lr_scheduler", TRAINING_FIELDS["fake_score_lr_scheduler"].metadata["read"]),
        Source(TRAINING, "fake_score_lr_scheduler"),
    )),
    Param("real_score_guidance_form", (
        Source(METHOD, "real_score_guidance_form", F.choice((CFG_FASTVIDEO, CFG_STANDARD))),), CFG_FASTVIDEO),
    Param("negative_prompt_embedding", (
        Source(METHOD, "negative_prompt_embedding", F.read_nonempty_str),), ""),
    Param("negative_prompt", (Source(METHOD, "negative_prompt", F.optional(F.read_str)),), None),
)

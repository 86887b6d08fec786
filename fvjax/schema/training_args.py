"""`TrainingArgs`: the recipe's `training:` section, with FastVideo's field names and defaults.

Every field FastVideo's `TrainingArgs` (and the `FastVideoArgs` it inherits) defines for training is
here, so a FastVideo recipe loads unchanged. Each field carries metadata:
- `status`: "used" (fvjax reads it), "ignored" (accepted for compatibility; means nothing under JAX or
  only to FastVideo's legacy pipelines; the dry-run lists any that a recipe sets), or "unsupported"
  (accepted at its default only; another value is an error until fvjax implements it);
- `group`: the section of spec §2 it belongs to; `doc`: what it means here.
Values are normalised when read: `betas: "0.0,0.999"` becomes (0.0, 0.999),
`validation_sampling_steps: "8"` becomes (8,), `validation_guidance_scale: "6.0"` becomes (6.0,).
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

from fvjax.schema import fields as F
from fvjax.schema.data_path import DataPath, read_data_path
from fvjax.sharding.mesh import AUTO

USED, IGNORED, UNSUPPORTED = "used", "ignored", "unsupported"

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "cosine_with_min_lr", "polynomial",
                 "constant", "constant_with_warmup", "piecewise_constant")
PRECISIONS = ("fp32", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb", "none")
MIXED_PRECISION = ("", "bf16", "no", "fp32", "float32")  # accelerate's spelling; fvjax/training/roles.py reads it


class ExecutionMode(str, enum.Enum):
    DISTILLATION = "distillation"
    FINETUNING = "finetuning"


def _f(default: Any, read: F.Reader, group: str, doc: str, status: str = USED):
    meta = {"read": read, "group": group, "doc": doc, "status": status}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for defaults")  # frozen dataclass: immutable defaults only
    return dataclasses.field(default=default, metadata=meta)


_int, _float, _bool, _str = F.read_int, F.read_float, F.read_bool, F.read_str
_LORA = "LoRA of the trained student: becomes models.student.lora (fvjax/recipe/loader.py)"
_oint, _ofloat, _ostr = F.optional(F.read_int), F.optional(F.read_float), F.optional(F.read_str)
_JAX = "no meaning under JAX/XLA"
_LEGACY = "read only by FastVideo's legacy pipelines"
_SF = "self-forcing (not implemented yet in fvjax; read when it lands)"


@dataclasses.dataclass(frozen=True)
class TrainingArgs:
    # ---- run mode (set by the loader from recipe.method; a recipe may only restate them) ----
    mode: ExecutionMode = _f(ExecutionMode.DISTILLATION, F.read_str, "mode",
                             "distillation or finetuning; set from recipe.method")
    inference_mode: bool = _f(False, _bool, "mode", "always false for training (seed invariant)")
    workload_type: str = _f("t2v", F.choice(("t2v",)), "mode", "text-to-video only for now")
    model_path: str = _f("", _str, "model", "base model for pipeline defaults; defaults to the student's path")
    pretrained_model_name_or_path: str = _f("", _str, "model", "defaults to model_path")
    real_score_model_path: str = _f("", _str, "model", "legacy teacher path; must match the teacher role if set")
    fake_score_model_path: str = _f("", _str, "model", "legacy critic path; must match the critic role if set")
    dit_precision: str = _f("fp32", F.choice(PRECISIONS), "model", "master-weight dtype (fp32 for training)")
    override_transformer_cls_name: str | None = _f(
        None, F.optional(F.choice(("WanTransformer3DModel",))), "model", "the class follows each role's weights "
        "(only WanTransformer3DModel is accepted)", IGNORED)
    init_weights_from_safetensors: str = _f(
        "", _str, "model", "safetensors file that overrides the initial weights of roles that do not "
        "set disable_custom_init_weights")
    init_weights_from_safetensors_2: str = _f("", _str, "model", "MoE transformer_2 override", UNSUPPORTED)
    boundary_ratio: float | None = _f(0.875, _ofloat, "model", "Wan2.2 MoE expert switch; Wan2.1 has no "
                                      "second expert", IGNORED)
    trust_remote_code: bool = _f(False, _bool, "model", _JAX, IGNORED)
    revision: str | None = _f(None, _ostr, "model", "Hugging Face revision of hub ids", IGNORED)
    lora_path: str | None = _f(None, _ostr, "model", "LoRA", UNSUPPORTED)
    lora_nickname: str = _f("default", _str, "model", "LoRA adapter name", IGNORED)
    lora_target_modules: tuple[str, ...] | None = _f(None, F.optional(F.str_list), "model", _LORA)
    lora_rank: int | None = _f(None, _oint, "model", _LORA)
    lora_alpha: int | None = _f(None, _oint, "model", _LORA)
    lora_training: bool = _f(False, _bool, "model", _LORA)

    # ---- distributed (filled and checked by the loader; see fvjax.sharding.mesh) ----
    num_gpus: int = _f(1, _int, "distributed", "devices in the run (chips/GPUs over all hosts)")
    tp_size: int = _f(AUTO, _int, "distributed", "tensor-parallel size; -1 -> 1")
    sp_size: int = _f(AUTO, _int, "distributed", "sequence-parallel (Ulysses) size; -1 -> num_gpus")
    hsdp_replicate_dim: int = _f(1, _int, "distributed", "parameter replicas (HSDP)")
    hsdp_shard_dim: int = _f(AUTO, _int, "distributed", "parameter shards (HSDP); -1 -> num_gpus / replicas")
    dist_timeout: int | None = _f(None, _oint, "distributed", "torch.distributed timeout", IGNORED)
    distributed_executor_backend: str = _f("mp", _str, "distributed", _JAX, IGNORED)
    master_port: int | None = _f(None, _oint, "distributed", _JAX, IGNORED)
    dit_cpu_offload: bool = _f(False, _bool, "distributed", "always false for training (seed invariant)")
    use_fsdp_inference: bool = _f(False, _bool, "distributed", _JAX, IGNORED)
    dit_layerwise_offload: bool = _f(True, _bool, "distributed", _JAX, IGNORED)
    text_encoder_cpu_offload: bool = _f(True, _bool, "distributed", _JAX, IGNORED)
    image_encoder_cpu_offload: bool = _f(True, _bool, "distributed", _JAX, IGNORED)
    vae_cpu_offload: bool = _f(True, _bool, "distributed", _JAX, IGNORED)
    pin_cpu_memory: bool = _f(True, _bool, "distributed", _JAX, IGNORED)
    enable_torch_compile: bool = _f(False, _bool, "distributed", "XLA always compiles", IGNORED)
    disable_autocast: bool = _f(False, _bool, "distributed", _JAX, IGNORED)
    enable_stage_verification: bool = _f(True, _bool, "distributed", _JAX, IGNORED)
    output_type: str = _f("pil", _str, "distributed", "inference output type", IGNORED)
    override_pipeline_cls_name: str | None = _f(None, _ostr, "distributed", _JAX, IGNORED)
    override_text_encoder_safetensors: str | None = _f(None, _ostr, "model", "text-encoder override",
                                                       UNSUPPORTED)
    prompt_txt: str | None = _f(None, _ostr, "validation", "inference prompt file", IGNORED)
    train_sp_batch_size: int = _f(0, _int, "distributed", "legacy epoch arithmetic", IGNORED)
    fsdp_sharding_startegy: str = _f("", _str, "distributed", "sharding comes from the mesh plan "
                                     "(FastVideo's spelling kept)", IGNORED)
    fsdp_reduce_dtype: str = _f("fp32", F.choice(PRECISIONS), "distributed",
                                "gradients are reduced in fp32 under JAX", IGNORED)
    fsdp_modules_per_group: int = _f(1, _int, "distributed", _JAX, IGNORED)

    # ---- data ----
    data_path: DataPath = _f("", read_data_path, "data", "preprocessed dataset directory (FastVideo parquet or "
                             "fvjax), or several with repeat counts: \"a:2,b:1\", a list, {path: repeat}")
    dataloader_num_workers: int = _f(0, _int, "data", "grain worker processes")
    train_batch_size: int = _f(0, _int, "data", "samples per data-parallel (SP) group per micro-step")
    num_latent_t: int = _f(0, _int, "data", "latent frames kept (20 for 77 frames, 21 for 81)")
    num_height: int = _f(0, _int, "data", "pixel height")
    num_width: int = _f(0, _int, "data", "pixel width")
    num_frames: int = _f(0, _int, "data", "pixel frames")
    training_cfg_rate: float = _f(0.0, _float, "data", "probability of zeroing a sample's text embedding")
    seed: int | None = _f(None, _oint, "data", "run seed (required)")
    preprocessed_data_type: str = _f("t2v", F.choice(("t2v", "text_only"), reader=F.read_str), "data",
                                     "what the dataset rows hold: t2v (latents and text) or text_only (text "
                                     "embeddings; for methods that read no latents, e.g. DMD2 simulate)")
    group_frame: bool = _f(False, _bool, "data", _LEGACY, IGNORED)
    group_resolution: bool = _f(False, _bool, "data", _LEGACY, IGNORED)

    # ---- output / checkpoint ----
    output_dir: str = _f("", _str, "output", "checkpoints, logs and validation videos")
    checkpoints_total_limit: int = _f(0, _int, "output", "keep this many newest checkpoints (0 = all)")
    resume_from_checkpoint: str = _f("", F.null_means("", _str), "output",
                                     "checkpoint dir, output dir or 'latest' (null: start afresh)")
    training_state_checkpointing_steps: int = _f(0, _int, "output", "save every N steps (0 = never)")
    weight_only_checkpointing_steps: int = _f(0, _int, "output", "dropped by FastVideo's current schema; fvjax "
                                              "writes each trained role's weights at the end (<output_dir>/<role>/)",
                                              IGNORED)

    # ---- optimizer / scheduler ----
    learning_rate: float = _f(0.0, _float, "optimizer", "student AdamW learning rate")
    betas: tuple[float, float] = _f((0.9, 0.999), F.betas, "optimizer", "AdamW betas (\"b1,b2\" or a list)")
    weight_decay: float = _f(0.0, _float, "optimizer", "AdamW weight decay")
    lr_scheduler: str = _f("constant", F.choice(LR_SCHEDULERS), "optimizer", "student LR schedule")
    lr_warmup_steps: int = _f(0, _int, "optimizer", "warmup steps")
    lr_num_cycles: int = _f(0, _int, "optimizer", "cycles for cosine_with_restarts")
    lr_power: float = _f(0.0, _float, "optimizer", "power for polynomial")
    lr_step_rules: str | None = _f(None, _ostr, "optimizer", "fvjax addition: piecewise_constant rules "
                                   "\"mult:step,...,final_mult\" (diffusers' step_rules)")
    min_lr_ratio: float = _f(0.5, _float, "optimizer", "floor of cosine_with_min_lr")
    max_train_steps: int = _f(0, _int, "optimizer", "training steps")
    gradient_accumulation_steps: int = _f(0, _int, "optimizer", "micro-steps per update (0 means 1)")
    max_grad_norm: float | None = _f(0.0, _ofloat, "optimizer", "clip gradient norm; null or <= 0 disables")
    enable_gradient_checkpointing_type: str | None = _f(
        None, F.choice((None, "full", "ops", "block_skip")), "optimizer",
        "rematerialisation policy of trainable roles")
    mixed_precision: str = _f("", F.choice(MIXED_PRECISION), "optimizer",
                              "compute dtype: '' or bf16 -> bf16 (FastVideo's autocast); 'no'/fp32 -> fp32")
    num_train_epochs: int = _f(0, _int, "optimizer", _LEGACY, IGNORED)
    scale_lr: bool = _f(False, _bool, "optimizer", _LEGACY, IGNORED)
    selective_checkpointing: float = _f(0.0, _float, "optimizer", _LEGACY, IGNORED)
    master_weight_type: str = _f("", _str, "optimizer", "see dit_precision", IGNORED)

    # ---- distillation (DMD2; method_config is the primary place, these are Phase-2 / fallback) ----
    generator_update_interval: int = _f(5, _int, "distillation", "student updates every N steps")
    real_score_guidance_scale: float = _f(3.5, _float, "distillation", "teacher CFG w in x_c + w (x_c - x_u)")
    min_timestep_ratio: float = _f(0.2, _float, "distillation", "lower clamp of score timesteps / 1000")
    max_timestep_ratio: float = _f(0.98, _float, "distillation", "upper clamp of score timesteps / 1000")
    fake_score_learning_rate: float = _f(0.0, _float, "distillation", "critic LR; 0 -> learning_rate")
    fake_score_betas: tuple[float, float] = _f((0.9, 0.999), F.betas, "distillation", "critic AdamW betas")
    fake_score_lr_scheduler: str = _f("constant", F.choice(LR_SCHEDULERS), "distillation", "critic LR schedule")
    simulate_generator_forward: bool = _f(False, _bool, "distillation", "Phase-2 name of rollout_mode: simulate")
    warp_denoising_step: bool = _f(False, _bool, "distillation", "shift the few-step schedule by flow_shift")
    ema_decay: float = _f(0.0, _float, "distillation", "student EMA decay (0 = no EMA)")
    ema_start_step: int = _f(0, _int, "distillation", "first step of the EMA")
    use_ema: bool = _f(False, _bool, "distillation", "validate with EMA weights")
    VSA_sparsity: float = _f(0.0, _float, "distillation", "video sparse attention", UNSUPPORTED)
    VSA_decay_rate: float = _f(0.01, _float, "distillation", "VSA schedule (VSA not implemented)", IGNORED)
    VSA_decay_interval_steps: int = _f(1, _int, "distillation", "VSA schedule (VSA not implemented)", IGNORED)
    VSA_cache_tile_buf: bool = _f(False, _bool, "distillation", "VSA (not implemented)", IGNORED)
    moba_config_path: str | None = _f(None, _ostr, "distillation", "V-MoBA attention", UNSUPPORTED)
    log_visualization: bool = _f(False, _bool, "distillation", _LEGACY, IGNORED)
    visualization_steps: int = _f(0, _int, "distillation", _LEGACY, IGNORED)
    num_euler_timesteps: int = _f(0, _int, "distillation", _LEGACY, IGNORED)
    not_apply_cfg_solver: bool = _f(False, _bool, "distillation", _LEGACY, IGNORED)
    distill_cfg: float = _f(0.0, _float, "distillation", _LEGACY, IGNORED)
    scheduler_type: str = _f("", _str, "distillation", _LEGACY, IGNORED)
    linear_quadratic_threshold: float = _f(0.0, _float, "distillation", _LEGACY, IGNORED)
    linear_range: float = _f(0.0, _float, "distillation", _LEGACY, IGNORED)
    multi_phased_distill_schedule: str = _f("", _str, "distillation", _LEGACY, IGNORED)
    pred_decay_weight: float = _f(0.0, _float, "distillation", _LEGACY, IGNORED)
    pred_decay_type: str = _f("", _str, "distillation", _LEGACY, IGNORED)
    hunyuan_teacher_disable_cfg: bool = _f(False, _bool, "distillation", _LEGACY, IGNORED)
    dfake_gen_update_ratio: int = _f(5, _int, "distillation", _SF, IGNORED)
    num_frame_per_block: int = _f(3, _int, "distillation", _SF, IGNORED)
    independent_first_frame: bool = _f(False, _bool, "distillation", _SF, IGNORED)
    enable_gradient_masking: bool = _f(True, _bool, "distillation", _SF, IGNORED)
    gradient_mask_last_n_frames: int = _f(21, _int, "distillation", _SF, IGNORED)
    same_step_across_blocks: bool = _f(False, _bool, "distillation", _SF, IGNORED)
    last_step_only: bool = _f(False, _bool, "distillation", _SF, IGNORED)
    context_noise: int = _f(0, _int, "distillation", _SF, IGNORED)

    # ---- finetune flow matching ----
    weighting_scheme: str = _f("", F.choice(("", "sigma_sqrt", "logit_normal", "mode", "cosmap", "uniform")),
                               "finetune", "timestep density; only logit_normal and mode differ from uniform")
    logit_mean: float = _f(0.0, _float, "finetune", "logit_normal mean")
    logit_std: float = _f(1.0, _float, "finetune", "logit_normal std")
    mode_scale: float = _f(0.0, _float, "finetune", "mode-density scale")
    precondition_outputs: bool = _f(False, _bool, "finetune", "loss on x0 = x_t - sigma v instead of v")

    # ---- validation / tracking ----
    log_validation: bool = _f(False, _bool, "validation", "sample videos during training")
    validation_dataset_file: str = _f("", _str, "validation", "prompts file (json/csv/parquet/arrow)")
    validation_preprocessed_path: str = _f("", _str, "validation", _LEGACY, IGNORED)
    validation_steps: float = _f(0.0, _float, "validation", "validate every N steps")
    validation_at_start: bool = _f(True, _bool, "validation", "also validate before the first step (FastVideo's "
                                   "current callbacks.validation.run_at_start)")
    validation_sampling_steps: tuple[int, ...] = _f((), F.int_list, "validation",
                                                    "sampling step counts (\"8\" or \"8,4\")")
    validation_guidance_scale: tuple[float, ...] = _f((), F.float_list, "validation",
                                                      "CFG scales for validation (\"6.0\")")
    trackers: tuple[str, ...] = _f((), F.choice_list(TRACKERS), "validation", "trackers (tensorboard, wandb, none)")
    tracker_project_name: str = _f("", _str, "validation", "tracker project")
    wandb_run_name: str = _f("", _str, "validation", "tracker run name")
    tracker_entity: str = _f("", _str, "validation", "W&B entity (team or user); '' -> W&B's default")
    log_steps: int = _f(1, _int, "validation", "fvjax addition: fetch metrics from the devices every N steps "
                        "(every step is still logged; 1 = FastVideo's per-step sync)")

    @property
    def grad_accum(self) -> int:
        return max(1, self.gradient_accumulation_steps)

    @property
    def critic_learning_rate(self) -> float:
        return self.fake_score_learning_rate if self.fake_score_learning_rate > 0 else self.learning_rate

    def replace(self, **changes: Any) -> "TrainingArgs":
        return dataclasses.replace(self, **changes)


TRAINING_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainingArgs)}


def read_training_values(raw: dict[str, Any], where: object, prefix: str = "training") -> dict[str, Any]:
    """Check every key of `training:` against TrainingArgs and read it with its field's reader."""
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}"
        if name not in TRAINING_FIELDS:
            F.unknown_key(where, key, name, TRAINING_FIELDS)
        field = TRAINING_FIELDS[name]
        parsed = field.metadata["read"](value, where, key)
        if field.metadata["status"] == UNSUPPORTED and parsed != field.default:
            F.fail(where, key, f"is not supported by fvjax yet ({field.metadata['doc']}); "
                   f"remove it or set it to {field.default!r}")
        values[name] = parsed
    return values

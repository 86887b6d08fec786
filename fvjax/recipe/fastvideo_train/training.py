"""The nested `training:` blocks of FastVideo's current schema (spec fastvideo_v3_recipes.md §1.5, §1.6) ->
fvjax's flat TrainingArgs fields (FastVideo's own older names).

FastVideo reads most of these as `cast(value or DEFAULT)`: null means the default here too. Where a falsy
value would silently mean something else than it says (`min_lr_ratio: 0` is 0.5 there), fvjax refuses it
instead of guessing. Unknown keys (FastVideo ignores them) are errors, flat legacy names with a pointer to
their new place.
"""
from __future__ import annotations

from fvjax.errors import fail
from fvjax.schema import fields as F

# block -> {key in the block: TrainingArgs field}
BLOCKS: dict[str, dict[str, str]] = {
    "distributed": {k: k for k in ("num_gpus", "tp_size", "sp_size", "hsdp_replicate_dim", "hsdp_shard_dim",
                                   "pin_cpu_memory")},
    "data": {k: k for k in ("data_path", "preprocessed_data_type", "train_batch_size", "dataloader_num_workers",
                            "training_cfg_rate", "seed", "num_height", "num_width", "num_latent_t", "num_frames")},
    "optimizer": {k: k for k in ("learning_rate", "betas", "weight_decay", "lr_scheduler", "lr_warmup_steps",
                                 "lr_num_cycles", "lr_power", "min_lr_ratio", "lr_step_rules")},
    "loop": {k: k for k in ("max_train_steps", "gradient_accumulation_steps", "log_steps")},
    "checkpoint": {k: k for k in ("output_dir", "resume_from_checkpoint", "training_state_checkpointing_steps",
                                  "checkpoints_total_limit")},
    "tracker": {"trackers": "trackers", "entity": "tracker_entity", "project_name": "tracker_project_name",
                "run_name": "wandb_run_name"},
    "vsa": {"sparsity": "VSA_sparsity", "cache_tile_buf": "VSA_cache_tile_buf", "decay_rate": "VSA_decay_rate",
            "decay_interval_steps": "VSA_decay_interval_steps"},
    "model": {k: k for k in ("weighting_scheme", "logit_mean", "logit_std", "mode_scale", "precondition_outputs",
                             "mixed_precision", "moba_config", "enable_gradient_checkpointing_type")},
}
SCALARS = ("dit_precision", "model_path")
FVJAX_ADDITIONS = ("lr_step_rules", "log_steps", "mixed_precision")
# Values FastVideo's `x or default` turns into another number: refused where they are read (they do not
# mean what they say there), kept as written where nothing reads them.
FALSY_MEANS = {"min_lr_ratio": 0.5, "logit_std": 1.0, "mode_scale": 1.0}
READ_WHEN = {"min_lr_ratio": ("lr_scheduler", "cosine_with_min_lr"), "logit_std": ("weighting_scheme", "logit_normal"),
             "mode_scale": ("weighting_scheme", "mode")}
# Falsy values FastVideo reads as its default, where the default is the only sensible meaning.
FALSY_IS_DEFAULT = ("num_gpus", "tp_size", "sp_size", "hsdp_replicate_dim", "hsdp_shard_dim", "train_batch_size",
                    "gradient_accumulation_steps", "lr_scheduler", "dit_precision", "weighting_scheme",
                    "project_name")
# FastVideo's current-schema defaults where they differ from its TrainingArgs (fvjax's field defaults).
DEFAULTS = {"seed": 0, "train_batch_size": 1, "mode_scale": 1.0, "tracker_project_name": "fastvideo"}
# Every TrainingArgs field that has a place in this schema -> that place.
PLACES = {field: f"training.{block}.{key}" for block, keys in BLOCKS.items() for key, field in keys.items()}
PLACES.update({name: f"training.{name}" for name in SCALARS})
PLACES.update({"max_grad_norm": "callbacks.grad_clip.max_grad_norm", "ema_decay": "callbacks.ema.decay",
               "ema_start_step": "callbacks.ema.start_iter", "use_ema": "callbacks.ema.validate",
               "log_validation": "callbacks.validation", "validation_steps": "callbacks.validation.every_steps",
               "validation_dataset_file": "callbacks.validation.dataset_file",
               "validation_at_start": "callbacks.validation.run_at_start",
               "validation_sampling_steps": "callbacks.validation.sampling_steps",
               "validation_guidance_scale": "callbacks.validation.guidance_scale",
               "enable_gradient_checkpointing_type": "training.model.enable_gradient_checkpointing_type"})
del PLACES["moba_config"]
NEW_PLACE = dict(PLACES)
NEW_PLACE.update({"generator_update_interval": "method.generator_update_interval",
                  "real_score_guidance_scale": "method.real_score_guidance_scale",
                  "fake_score_learning_rate": "method.fake_score_learning_rate"})


def _wandb(section: dict) -> bool:
    """Whether the tracker block logs to W&B (FastVideo: no trackers listed means W&B)."""
    tracker = section.get("tracker") if isinstance(section.get("tracker"), dict) else {}
    trackers = tracker.get("trackers")
    return not trackers or (isinstance(trackers, list) and any(str(t).lower() == "wandb" for t in trackers))


def _falsy(value) -> bool:
    return value is None or value == 0 or value == "" or value is False


def read_training(raw, where: object) -> tuple[dict, dict[str, str], dict[str, str], dict[str, str | None]]:
    """-> (TrainingArgs values as written, field -> key as written, field -> why it has a default value,
    extra: {"moba_config", "enable_gradient_checkpointing_type", "trackers_given"} for the caller)."""
    section = F.mapping(raw if raw is not None else {}, where, "training")
    values: dict = {}
    written: dict[str, str] = {}
    defaults: dict[str, str] = {}
    remat = None
    valid_top = tuple(BLOCKS) + SCALARS
    for name, value in section.items():
        key = f"training.{name}"
        if name in SCALARS:
            if not _falsy(value):
                values[name], written[name] = value, key
            continue
        if name not in BLOCKS:
            if name in NEW_PLACE:
                fail(where, key, f"is a flat (older schema) name; in FastVideo's current schema it is "
                     f"{NEW_PLACE[name]} (FastVideo would ignore it silently)")
            F.unknown_key(where, key, name, valid_top)
        block = F.mapping(value if value is not None else {}, where, key)
        fields = BLOCKS[name]
        for sub, sub_value in block.items():
            sub_key = f"{key}.{sub}"
            if sub not in fields:
                F.unknown_key(where, sub_key, sub, fields)
            field = fields[sub]
            if sub == "betas" and sub_value is None:
                fail(where, sub_key, "is null; give two numbers ([0.9, 0.999]) or remove it for the default")
            if field in FALSY_MEANS and sub_value is not None and _falsy(sub_value):
                read_by, value = READ_WHEN[field]
                if block.get(read_by) == value:
                    fail(where, sub_key, f"is {sub_value!r}, which FastVideo reads as {FALSY_MEANS[field]} (its "
                         f"default) with {read_by} {value}; write {FALSY_MEANS[field]} or a positive value")
            if sub == "project_name" and sub_value == "" and not _wandb(section):
                values[field], written[field] = "", sub_key    # (no W&B: nothing reads it)
                continue
            if sub_value is None or (sub in FALSY_IS_DEFAULT and _falsy(sub_value)):
                continue
            if field == "moba_config":
                if F.mapping(sub_value, where, sub_key):
                    fail(where, sub_key, "V-MoBA attention is not implemented in fvjax; remove it")
                continue
            if field == "enable_gradient_checkpointing_type":
                remat = F.choice((None, "full", "ops", "block_skip"))(sub_value, where, sub_key)
                continue
            values[field], written[field] = sub_value, sub_key
    for field, value in DEFAULTS.items():
        if field not in values:
            values[field] = value
            defaults[field] = "FastVideo's current-schema default"
    if not values.get("trackers"):
        # FastVideo adds wandb when no tracker is listed and the project name is set (it always is).
        values["trackers"] = ["wandb"]
        defaults["trackers"] = "FastVideo's current schema logs to W&B unless trackers: [none]"
    return values, written, defaults, {"enable_gradient_checkpointing_type": remat}


def check_trackers(values: dict, where: object, key: str) -> None:
    trackers = values.get("trackers")
    if isinstance(trackers, str):
        fail(where, key, "must be a list (FastVideo splits a bare string into characters), e.g. [wandb]")
    if isinstance(trackers, list) and any(isinstance(t, str) and t.lower() == "swanlab" for t in trackers):
        fail(where, key, "swanlab is not supported by fvjax; use wandb, tensorboard or none")

"""FastVideo `_target_` class paths: which fvjax family / method / callback each stands for.

Families and methods declare the classes they implement (`Family.fastvideo_targets`,
`MethodSpec.fastvideo_targets`), so a plug-in adds its own. The classes FastVideo has and fvjax does not
(yet) are listed here with the reason, so such a recipe is refused in one line instead of training
something else.
"""
from __future__ import annotations

from fvjax.errors import fail
from fvjax.families.api import Family
from fvjax.families.registry import all_families
from fvjax.methods.api import MethodSpec
from fvjax.methods.registry import available_methods, get_method

NOT_YET = {
    "fastvideo.train.models.matrixgame2.matrixgame2.MatrixGame2Model": "MatrixGame2 (Wan I2V world model) is not "
                                                                       "implemented in fvjax",
    "fastvideo.train.models.matrixgame2.matrixgame2_causal.MatrixGame2CausalModel": "MatrixGame2 (Wan I2V world "
                                                                                    "model) is not implemented in fvjax",
}
_METHOD_NOT_YET = {
    "StreamingLongTuningMethod": "streaming long tuning (Self-Forcing past the training length with VAE re-encoded "
                                 "anchors) is not implemented in fvjax (self_forcing, SelfForcingMethod, is)",
    "AnyFlowMethod": "AnyFlow is not implemented in fvjax", "AnyFlowPretrainMethod": "AnyFlow is not implemented "
                                                                                   "in fvjax",
    "DiffusionNFTMethod": "DiffusionNFT (RL) is not implemented in fvjax",
}
CALLBACKS = {
    "grad_clip": ("fastvideo.train.callbacks.grad_clip.GradNormClipCallback",
                  "fastvideo.train.callbacks.GradNormClipCallback"),
    "ema": ("fastvideo.train.callbacks.ema.EMACallback", "fastvideo.train.callbacks.EMACallback"),
    "validation": ("fastvideo.train.callbacks.validation.ValidationCallback",
                   "fastvideo.train.callbacks.ValidationCallback"),
}


def _class_path(value, where: object, key: str) -> str:
    if not isinstance(value, str) or "." not in value.strip():
        fail(where, key, f"must be a dotted class path (module.Class), got {value!r}")
    return value.strip()


def family_for_target(value, where: object, key: str) -> Family:
    target = _class_path(value, where, key)
    supported = {t: f for f in all_families().values() for t in f.fastvideo_targets}
    if target in supported:
        return supported[target]
    why = NOT_YET.get(target)
    listed = ", ".join(sorted(supported)) or "(none)"
    if why:
        fail(where, key, f"{target}: {why}; fvjax trains {listed}")
    fail(where, key, f"unknown model class {target!r}; fvjax trains {listed}")


def method_for_target(value, where: object, key: str) -> MethodSpec:
    target = _class_path(value, where, key)
    methods = [get_method(name) for name in available_methods()]
    for method in methods:
        if target in method.fastvideo_targets:
            return method
    listed = ", ".join(t for m in methods for t in m.fastvideo_targets[:1])
    why = _METHOD_NOT_YET.get(target.rsplit(".", 1)[1])
    if why and target.startswith("fastvideo.train.methods."):
        fail(where, key, f"{target}: {why}; fvjax implements {listed}")
    fail(where, key, f"unknown method class {target!r}; fvjax implements {listed}")


def callback_kind(name: str, spec: dict, where: object, key: str) -> str:
    """grad_clip, ema or validation, from the entry's _target_ or (without one) its name."""
    if "_target_" in spec:
        target = _class_path(spec["_target_"], where, f"{key}._target_")
        for kind, targets in CALLBACKS.items():
            if target in targets:
                return kind
        fail(where, f"{key}._target_", f"unknown callback class {target!r}; fvjax has "
             f"{', '.join(t[0] for t in CALLBACKS.values())}")
    if name not in CALLBACKS:
        fail(where, key, f"unknown callback {name!r} (FastVideo skips it with a warning); the callbacks are "
             f"{', '.join(CALLBACKS)}, or give _target_")
    return name

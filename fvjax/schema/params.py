"""Method hyper-parameters that may be written in more than one place.

The seed's Phase 2 puts DMD knobs in `training:` and the few-step list in `pipeline_config:`; Phase 3 and
FastVideo's design branch put them in `method_config:`. A `Param` lists every place its value may come
from; `resolve_params` reads whichever are given, rejects two places that disagree, falls back to the
TrainingArgs default (FastVideo's fallback) or the param's own default, and reports the value to write
back into the training/pipeline field, so both forms of one recipe normalise to equal objects.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from fvjax.errors import fail
from fvjax.schema import fields as F

METHOD, TRAINING, PIPELINE = "method_config", "training", "pipeline_config"


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUIRED = _Marker("REQUIRED")
FROM_CONTEXT = _Marker("FROM_CONTEXT")  # the loader supplies it (e.g. the family's default flow_shift)


@dataclasses.dataclass(frozen=True)
class FromTraining:
    """Default: the value of another training field (FastVideo: fake_score_betas falls back to betas).
    A given value in `also_for` means the same (FastVideo: fake_score_learning_rate 0 is the student's)."""
    field: str
    also_for: tuple = ()


def _same(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True)
class Source:
    section: str                                  # METHOD, TRAINING or PIPELINE
    key: str                                      # key inside that section
    read: F.Reader | None = None                  # reader for METHOD keys (others use their field's reader)
    to_param: Callable[[Any], Any] = _same        # source value -> param value
    from_param: Callable[[Any], Any] | None = _same  # param value -> field value written back; None: no write


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    sources: tuple[Source, ...]
    default: Any = None                           # REQUIRED, FROM_CONTEXT, FromTraining(field) or a value
                                                  # (None: the TrainingArgs default of a TRAINING source)
    check: Callable[[Any, object, str], None] | None = None
    missing_hint: str = ""
    stored: bool = True                           # False: read and checked, but not a field of the config
    # True: the sources are separate knobs in priority order (the first given wins) rather than one
    # setting written in several places (which must agree). FastVideo's current schema splits the
    # student's training shift (models.student.flow_shift) from the pipeline's (validation) shift.
    first_wins: bool = False


@dataclasses.dataclass(frozen=True)
class Given:
    """One section as the recipe gave it: parsed values plus the file and key prefix for errors."""
    values: dict[str, Any]
    where: object
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name


def method_keys(params: tuple[Param, ...]) -> dict[str, Source]:
    return {s.key: s for p in params for s in p.sources if s.section == METHOD}


def read_method_config(params: tuple[Param, ...], raw: dict[str, Any], where: object,
                       prefix: str, method_name: str) -> dict[str, Any]:
    valid = method_keys(params)
    values = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}"
        if name not in valid:
            hint = F.did_you_mean(name, valid)
            fail(where, key, f"unknown key for method {method_name!r}" + (f"; {hint}" if hint else ""))
        values[name] = valid[name].read(value, where, key)
    return values


@dataclasses.dataclass(frozen=True)
class Resolved:
    values: dict[str, Any]                        # param name -> value (stored params only)
    write_back: dict[tuple[str, str], Any]        # (section, field) -> value to store there
    origins: dict[str, tuple[object, str]]        # param name -> (file, dotted key) it came from
    found: frozenset[str] = frozenset()           # param names the recipe gave (the others are defaults)


def _training_value(given: dict[str, Given], field: str, training_defaults: dict[str, Any]) -> Any:
    training = given.get(TRAINING)
    return training.values[field] if training and field in training.values else training_defaults[field]


def resolve_params(params: tuple[Param, ...], given: dict[str, Given], *,
                   training_defaults: dict[str, Any], context: dict[str, Any]) -> Resolved:
    values: dict[str, Any] = {}
    write_back: dict[tuple[str, str], Any] = {}
    origins: dict[str, tuple[object, str]] = {}
    found_names: set[str] = set()
    for param in params:
        found: list[tuple[Any, object, str]] = []
        found_sources: list[Source] = []
        for src in param.sources:
            section = given.get(src.section)
            # null is "not given" (FastVideo: pipeline flow_shift null = the model's default)
            if section is not None and section.values.get(src.key) is not None:
                found.append((src.to_param(section.values[src.key]), section.where, section.key(src.key)))
                found_sources.append(src)
        for value, where, key in ([] if param.first_wins else found[1:]):
            first_value, first_where, first_key = found[0]
            if value != first_value:
                other = first_key if first_where == where else f"{first_where}: {first_key}"
                fail(where, key, f"is {value!r} but {other} is {first_value!r}; the same setting given in "
                     "two places must agree (keep one)")
        primary = param.sources[0]
        primary_given = given.get(primary.section)
        if found:
            value, where, key = found[0]
            found_names.add(param.name)
            if isinstance(param.default, FromTraining) and value in param.default.also_for:
                value = _training_value(given, param.default.field, training_defaults)
        else:
            training_src = next((s for s in param.sources if s.section == TRAINING), None)
            if param.default is REQUIRED:
                where = primary_given.where if primary_given else None
                key = primary_given.key(primary.key) if primary_given else primary.key
                fail(where, key, "missing" + (f"; {param.missing_hint}" if param.missing_hint else ""))
            elif param.default is FROM_CONTEXT:
                value = context[param.name]
            elif isinstance(param.default, FromTraining):
                value = _training_value(given, param.default.field, training_defaults)
            elif training_src is not None and param.default is None:
                value = training_src.to_param(training_defaults[training_src.key])
            else:
                value = param.default
            where = primary_given.where if primary_given else None
            key = primary_given.key(primary.key) if primary_given else primary.key
        if param.check is not None:
            param.check(value, where, key)
        if param.stored:
            values[param.name] = value
        origins[param.name] = (where, key)
        for src in param.sources:
            if param.first_wins and found_sources and src is not found_sources[0]:
                continue   # separate knobs: the one given does not overwrite the others
            if src.section != METHOD and src.from_param is not None:
                write_back[(src.section, src.key)] = src.from_param(value)
    return Resolved(values, write_back, origins, frozenset(found_names))

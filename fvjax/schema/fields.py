"""Typed readers for recipe values: each takes (value, where, key) and returns the normalised value or
raises a `UserError` naming the file and the dotted key.

FastVideo passed YAML values to dataclass constructors unchecked; here every value is checked once, at
load time, and string forms FastVideo accepts ("0.0,0.999", "8", "6.0") are given their FastVideo meaning.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Iterable, Sequence

from fvjax.errors import fail

Reader = Callable[[Any, object, str], Any]


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def did_you_mean(name: str, valid: Iterable[str], list_all_below: int = 12) -> str:
    """' (did you mean 'x'?)' or, for short lists, the valid names; '' when nothing helps."""
    valid = sorted(set(valid))
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if not close:
        lowered = {v.lower(): v for v in valid}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    if close:
        return f"did you mean {close[0]!r}?"
    if len(valid) <= list_all_below:
        return "valid keys: " + ", ".join(valid)
    return ""


def unknown_key(where: object, key: str, name: str, valid: Iterable[str]) -> None:
    hint = did_you_mean(name, valid)
    fail(where, key, "unknown key" + (f"; {hint}" if hint else ""))


def read_bool(value: Any, where: object, key: str) -> bool:
    # A quoted "true" is a string in YAML: FastVideo's loader rejects it, and so do we.
    if isinstance(value, bool):
        return value
    fail(where, key, f"must be a YAML bool (true or false, unquoted), got {type_name(value)}")


def read_int(value: Any, where: object, key: str) -> int:
    """Int; an int-valued float (8.0) or numeric string ("8") is accepted; a bool is not."""
    if isinstance(value, bool):
        fail(where, key, f"must be an integer, got {type_name(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number == int(number):
            return int(number)
    fail(where, key, f"must be an integer, got {type_name(value)}")


def read_float(value: Any, where: object, key: str) -> float:
    """Float; an int or numeric string ("6.0", "2e-6") is accepted; a bool is not."""
    if isinstance(value, bool):
        fail(where, key, f"must be a number, got {type_name(value)}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            fail(where, key, f"must be a number, got {type_name(value)}")
    else:
        fail(where, key, f"must be a number, got {type_name(value)}")
    if not math.isfinite(number):
        fail(where, key, f"must be a finite number, got {value!r}")
    return number


def read_str(value: Any, where: object, key: str) -> str:
    if isinstance(value, str):
        return value
    hint = " (YAML reads yes/no/on/off as bools: quote it)" if isinstance(value, bool) else ""
    fail(where, key, f"must be a string, got {type_name(value)}{hint}")


def read_nonempty_str(value: Any, where: object, key: str) -> str:
    text = read_str(value, where, key)
    if not text.strip():
        fail(where, key, "must be a non-empty string")
    return text


def null_means(default: Any, reader: Reader) -> Reader:
    """null reads as `default` (FastVideo: `resume_from_checkpoint: null` is no resume)."""
    def read(value: Any, where: object, key: str) -> Any:
        return default if value is None else reader(value, where, key)
    return read


def optional(reader: Reader) -> Reader:
    return null_means(None, reader)


def choice(options: Sequence[Any], *, aliases: dict[str, str] | None = None,
           reader: Reader = read_str) -> Reader:
    aliases = aliases or {}

    def read(value: Any, where: object, key: str) -> Any:
        if value is None and None in options:
            return None
        parsed = reader(value, where, key)
        parsed = aliases.get(parsed, parsed)
        if parsed not in options:
            shown = ", ".join(repr(o) for o in list(options) + list(aliases) if o is not None)
            fail(where, key, f"is {value!r}; must be one of {shown}")
        return parsed
    return read


def _split_list(value: Any, where: object, key: str, what: str) -> list[Any]:
    """A YAML list, a comma-separated string ("8,4") or a single scalar -> list of raw items."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    fail(where, key, f"must be {what}, got {type_name(value)}")


def int_list(value: Any, where: object, key: str) -> tuple[int, ...]:
    items = _split_list(value, where, key, "a list of integers or a comma-separated string")
    return tuple(read_int(v, where, f"{key}[{i}]") for i, v in enumerate(items))


def float_list(value: Any, where: object, key: str) -> tuple[float, ...]:
    items = _split_list(value, where, key, "a list of numbers or a comma-separated string")
    return tuple(read_float(v, where, f"{key}[{i}]") for i, v in enumerate(items))


def str_list(value: Any, where: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        fail(where, key, f"must be a list of strings, got {type_name(value)}")
    return tuple(read_str(v, where, f"{key}[{i}]") for i, v in enumerate(value))


def choice_list(options: Sequence[str]) -> Reader:
    """A list of strings each one of `options` (case-insensitive, as FastVideo's trackers)."""
    def read(value: Any, where: object, key: str) -> tuple[str, ...]:
        items = str_list(value, where, key)
        for i, item in enumerate(items):
            if item.lower() not in options:
                hint = did_you_mean(item.lower(), options)
                fail(where, f"{key}[{i}]", f"is {item!r}; must be one of {', '.join(options)}"
                     + (f" ({hint})" if hint.startswith("did") else ""))
        return tuple(item.lower() for item in items)
    return read


INT32_MAX = 2 ** 31 - 1


def betas(value: Any, where: object, key: str) -> tuple[float, float]:
    """FastVideo's betas: "b1,b2" or a 2-list; each in [0, 1)."""
    parsed = float_list(value, where, key)
    if len(parsed) != 2:
        fail(where, key, f"must hold two numbers (beta1, beta2) such as \"0.9,0.999\", got {value!r}")
    for b in parsed:
        if not 0.0 <= b < 1.0:
            fail(where, key, f"each beta must be in [0, 1), got {value!r}")
    return parsed[0], parsed[1]


def mapping(value: Any, where: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(where, key, f"must be a mapping, got {type_name(value)}")
    for k in value:
        if not isinstance(k, str):
            fail(where, f"{key}.{k}" if key else str(k), "keys must be strings")
    return value


def check(condition: bool, where: object, key: str, message: str) -> None:
    if not condition:
        fail(where, key, message)


MAX_FLOW_SHIFT = 1000.0   # Wan uses 1..17; beyond this the shifted table loses all float32 resolution


def check_unit_interval(value: float, where: object, key: str) -> None:
    """A ratio (of the timestep range, of a schedule): within [0, 1]."""
    if not 0.0 <= value <= 1.0:
        fail(where, key, f"is {value}; must be in [0, 1]")


def check_flow_shift(value: float, where: object, key: str) -> None:
    if not 0 < value <= MAX_FLOW_SHIFT:
        fail(where, key, f"is {value:g}; flow_shift must be in (0, {MAX_FLOW_SHIFT:g}] (Wan uses 3 to 12)")

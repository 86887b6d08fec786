"""Dotted command-line overrides, as FastVideo's `fastvideo/train` entry point reads them:
`--training.loop.max_train_steps 10` or `--training.loop.max_train_steps=10`, applied to the recipe's raw
mapping before anything is checked, so every schema takes them and the usual checks (types, unknown keys)
see the overridden recipe.

Values are typed as FastVideo types them (true/false, none/null, int, float, a YAML `[...]` list, else the
string); each field's reader then checks the value. Unlike FastVideo, an override of a key the schema does
not know is an error (through the loader's unknown-key check), and overriding a field inside a value that
is not a mapping (e.g. `pipeline: file.json`) is refused instead of replacing that value with `{}`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import yaml

from fvjax.errors import fail
from fvjax.schema.recipe import key_under

WHERE = "command line"


@dataclasses.dataclass(frozen=True)
class Override:
    key: str          # dotted key, as written after "--"
    value: Any
    text: str         # the value as written

    @property
    def flag(self) -> str:
        return f"--{self.key}"


def parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            return text
    return text


def parse_overrides(tokens: Sequence[str], top_level: Sequence[str]) -> list[Override]:
    """`tokens`: what argparse did not recognise. A key without a dot must be a top-level recipe key
    (`top_level`); anything else is not an override but an unknown flag."""
    overrides: list[Override] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            fail(WHERE, None, f"unexpected argument {token!r}; overrides are written --dotted.key value "
                 "(see --help)")
        body = token[2:]
        key = body.split("=", 1)[0]
        parts = key.split(".")
        if len(parts) == 1 and key not in top_level:
            fail(WHERE, f"--{key}", "unrecognized argument; a recipe override is --dotted.key value (e.g. "
                 "--training.loop.max_train_steps 10; see --help)")
        if any(not p for p in parts):
            fail(WHERE, f"--{key}", "is not a dotted key (an empty part)")
        if "=" in body:
            text = body.split("=", 1)[1]
            i += 1
        else:
            if i + 1 >= len(tokens):
                fail(WHERE, token, "has no value; write --dotted.key value")
            text = tokens[i + 1]
            i += 2
        overrides.append(Override(key, parse_value(text), text))
    return overrides


def apply_overrides(raw: dict, overrides: Sequence[Override]) -> dict:
    """A copy of `raw` with each override's leaf replaced (missing or null intermediates become
    mappings)."""
    import copy

    result = copy.deepcopy(raw)
    for override in overrides:
        node = result
        parts = override.key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                inner = ".".join(parts[:depth + 1])
                fail(WHERE, override.flag, f"{inner} is {type(child).__name__} {child!r} in the recipe, not a "
                     f"mapping, so it has no field {parts[depth + 1]!r}; replace it whole with --{inner} VALUE")
            node = child
        node[parts[-1]] = override.value
    return result


def overridden(key: str | None, overrides: Sequence[Override]) -> Override | None:
    """The override that set `key` (or a mapping above it), if any."""
    if not key:
        return None
    for override in reversed(overrides):
        if key_under(key, override.key):
            return override
    return None

"""`training.data_path`: one dataset root, or several with repeat counts (FastVideo's
`_parse_data_path_specs`, spec §5.1).

Forms a recipe may write:
- a string: split on ","; each part stripped, empty parts skipped; a part with ":" is split at the last
  colon and the tail must be an integer repeat count ("a:2,b:1");
- a list of paths: each with repeat 1 (a ":N" inside a list item is part of the path, so a path with a
  colon in it is written as a list item);
- a mapping {path: repeat}, in mapping order; repeat an integer.
Datasets with a repeat <= 0 are dropped. Relative paths are taken from the current directory.

Normalised value (immutable, so the frozen Recipe stays hashable and comparable): exactly one dataset
with repeat 1 is that path, a plain `str`, as before; anything else is a `DataPaths` tuple of
(path, repeat) pairs. An empty or blank string stays "" (unset: the preflight reports it).
"""
from __future__ import annotations

from typing import Any, Union

from fvjax.errors import fail
from fvjax.schema.fields import type_name


class DataPaths(tuple):
    """(path, repeat) pairs of a multi-dataset `training.data_path`; shown in FastVideo's string form."""

    def __str__(self) -> str:
        return ",".join(f"{path}:{repeat}" for path, repeat in self)


DataPath = Union[str, DataPaths]

_FORMS = 'a path, "path:N,path:N", a list of paths or a mapping {path: repeat}'


def read_data_path(value: Any, where: object, key: str) -> DataPath:
    specs: list[tuple[str, int]] = []
    given = 0
    if isinstance(value, str):
        if not value.strip():
            return ""
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            given += 1
            path, repeat = part, 1
            if ":" in part:
                path, tail = part.rsplit(":", 1)
                path = path.strip()
                try:
                    repeat = int(tail)
                except ValueError:
                    fail(where, key, f"{part!r}: the text after the last ':' must be an integer repeat count "
                                     "(\"path:N\"); a path with a ':' in it can be written as a YAML list item")
                if not path:
                    fail(where, key, f"{part!r} has no path before the ':'")
            if repeat > 0:
                specs.append((path, repeat))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                fail(where, key, f"item {i} must be a non-empty path string, got {type_name(item)}")
            given += 1
            specs.append((item, 1))
    elif isinstance(value, dict):
        for path, repeat in value.items():
            if not isinstance(path, str) or not path:
                fail(where, key, f"mapping keys must be non-empty path strings, got {type_name(path)}")
            given += 1
            n = _as_int(repeat)
            if n is None:
                fail(where, key, f"{path!r}: the repeat count must be an integer, got {type_name(repeat)}")
            if n > 0:
                specs.append((path, n))
    else:
        fail(where, key, f"must be {_FORMS}, got {type_name(value)}")
    if not specs:
        why = "every dataset has a repeat count of 0 or below" if given else "it names no dataset"
        fail(where, key, f"{why}; give {_FORMS}")
    if len(specs) == 1 and specs[0][1] == 1:
        return specs[0][0]
    return DataPaths(specs)


def _as_int(value: Any) -> int | None:
    """An integer repeat count (8, 8.0, "8"), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def data_specs(data_path: DataPath) -> list[tuple[str, int]]:
    """The (path, repeat) pairs of a normalised data_path ([] when unset)."""
    if isinstance(data_path, str):
        return [(data_path, 1)] if data_path else []
    return [(str(path), int(repeat)) for path, repeat in data_path]

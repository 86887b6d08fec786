"""Reading recipe files: YAML (and JSON for pipeline configs) with duplicate-key detection.

PyYAML silently keeps the last of two equal keys and reads `2e-6` as a string (YAML 1.1 floats need a
dot); both would let a typo or an ordinary learning rate through wrongly, so this loader rejects the
first and reads the second as a float.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from fvjax.errors import fail

YAML_SUFFIXES = (".yaml", ".yml")


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # Duplicates among the keys written here; keys a merge (`<<: *anchor`) brings in may be overridden.
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain scalar (a name), not a list or mapping",
                key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2-style floats without a dot (1e-5, 2E+3), which YAML 1.1 leaves as strings.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_text(path: Path, what: str) -> str:
    if not os.path.exists(path):   # (os.path: False for a name too long or with a NUL byte, not an error)
        fail(path, None, f"{what} not found")
    if not os.path.isfile(path):
        fail(path, None, f"{what} is not a regular file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        fail(path, None, f"{what} is not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        fail(path, None, f"cannot read {what}: {e.strerror}")


# Recipes nest a few levels; deeper data is not a recipe, and would exhaust the stack of later steps.
MAX_DEPTH = 100


def nesting_depth(value: Any) -> int:
    """How deep mappings and lists nest (each shared YAML alias counted once, so aliases cannot blow up)."""
    deepest, stack, seen = 0, [(value, 1)], set()
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)) and id(node) not in seen:
            seen.add(id(node))
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _not_too_deep(value: Any, where: object) -> Any:
    if nesting_depth(value) > MAX_DEPTH:
        fail(where, None, f"nested more than {MAX_DEPTH} levels deep; a recipe nests a few")
    return value


def parse_yaml(text: str, where: object) -> Any:
    try:
        return _not_too_deep(yaml.load(text, Loader=_StrictLoader), where)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        fail(where, None, f"nested more than {MAX_DEPTH} levels deep; a recipe nests a few")
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = e.problem or e.context or "invalid YAML"
        fail(where, None, f"YAML syntax error at {line}{problem}")
    except yaml.YAMLError as e:
        fail(where, None, f"YAML error: {e}")


def load_config_file(path: Path, what: str) -> Any:
    """A .json, .yaml or .yml file (used for pipeline_config_path)."""
    suffix = path.suffix.lower()
    if suffix not in (".json",) + YAML_SUFFIXES:
        fail(path, None, f"{what} must be a .json, .yaml or .yml file")
    text = read_text(path, what)
    if suffix == ".json":
        try:
            return _not_too_deep(json.loads(text), path)
        except json.JSONDecodeError as e:
            fail(path, None, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}")
        except RecursionError:
            fail(path, None, f"nested more than {MAX_DEPTH} levels deep; a pipeline config nests a few")
    return parse_yaml(text, path)

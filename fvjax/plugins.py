"""Registries of plug-ins (model families, training methods), filled three ways:

- built-ins, named here by "module:attribute" and imported on first lookup (so loading a recipe imports
  only the plug-ins it names);
- entry points of installed distributions, groups "fvjax.families" and "fvjax.methods" (an entry point
  `name = "pkg.module:OBJECT"` in a lab's pyproject.toml: `[project.entry-points."fvjax.methods"]`);
- `register(obj)` calls at run time.
A name registered twice is a programming error. Entry points are read again when a name is not found,
so a distribution installed (or put on sys.path) after the first lookup is still seen.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def load_object(target: str):
    """'pkg.module:attr' -> the attribute."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtins: dict[str, str], expected: type, name_of: Callable[[T], str]):
        """`kind` names the plug-in in messages; `group` is its entry-point group; `expected` its type."""
        self.kind, self.group = kind, group
        self._builtins = dict(builtins)
        self._expected, self._name_of = expected, name_of
        self._entries: dict[str, T] = {}
        self._entry_points_read: set[str] = set()

    def register(self, obj: T) -> T:
        if not isinstance(obj, self._expected):
            raise TypeError(f"a {self.kind} must be a {self._expected.__module__}.{self._expected.__name__}, "
                            f"got {obj!r}")
        name = self._name_of(obj)
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def _load_builtin(self, name: str) -> None:
        target = self._builtins.pop(name)
        obj = load_object(target)
        if self._name_of(obj) not in self._entries:
            self.register(obj)

    def _read_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=self.group):
            if ep.name in self._entries or ep.name in self._builtins or ep.value in self._entry_points_read:
                continue
            self._entry_points_read.add(ep.value)
            obj = ep.load()
            if self._name_of(obj) != ep.name:
                raise ValueError(f"entry point {ep.name} = {ep.value} ({self.group}) names a {self.kind} "
                                 f"called {self._name_of(obj)!r}")
            self.register(obj)

    def find(self, name: str) -> T | None:
        if name in self._entries:
            return self._entries[name]
        if name in self._builtins:
            self._load_builtin(name)
            return self._entries[name]
        self._read_entry_points()
        return self._entries.get(name)

    def all(self) -> dict[str, T]:
        for name in list(self._builtins):
            self._load_builtin(name)
        self._read_entry_points()
        return dict(self._entries)

    def names(self) -> tuple[str, ...]:
        """Every known name, without importing anything but entry-point metadata."""
        names = set(self._entries) | set(self._builtins)
        names |= {ep.name for ep in importlib.metadata.entry_points(group=self.group)}
        return tuple(sorted(names))

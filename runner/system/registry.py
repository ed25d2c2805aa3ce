"""Registries whose rows name their implementation as a string ("module:Class"), imported on first use.

The engine and format registries are read by light code (composing a config, resuming a finished job):
a class named by string keeps its module, and the library it imports, out of every process that does not
run it (a llama.cpp job never imports torch).
"""

import importlib
from typing import Dict, Generic, Mapping, Protocol, TypeVar

from runner.errors import UserError

T = TypeVar("T")


class Row(Protocol):
    @property
    def implementation(self) -> str: ...  # "module:Class"


class LazyInstances(Generic[T]):
    """One instance per row name, of the class its row names, made on the first ask; an unknown name is a
    UserError naming `key` (the config key that chose it) and the known names."""

    def __init__(self, rows: Mapping[str, Row], key: str, what: str):
        self.rows, self.key, self.what = rows, key, what
        self._made: Dict[str, T] = {}

    def get(self, name: str) -> T:
        if name not in self.rows:
            raise UserError(self.key, f"unknown {self.what} '{name}'", f"use one of {sorted(self.rows)}")
        if name not in self._made:
            module, cls = self.rows[name].implementation.split(":")
            self._made[name] = getattr(importlib.import_module(module), cls)()
        return self._made[name]

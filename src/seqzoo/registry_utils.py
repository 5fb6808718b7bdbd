"""A small named registry with closest-match error messages, shared by models, tasks and experiments."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from seqzoo.errors import UnknownNameError  # noqa: F401  (re-exported: callers import it from here)

T = TypeVar("T")


def closest(name: str, options: Iterable[str]) -> str | None:
    """The option most similar to ``name`` (or None when nothing is close)."""
    matches = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_message(kind: str, name: str, options: Iterable[str]) -> str:
    options = sorted(options)
    hint = closest(name, options)
    msg = f"unknown {kind} {name!r}"
    if hint is not None:
        msg += f"; did you mean {hint!r}?"
    return msg + f" Valid: {', '.join(options)}"


def check_kwargs(kind: str, kwargs: dict[str, Any], valid: Iterable[str]) -> None:
    """Raise a TypeError naming the closest valid key for each unknown key in ``kwargs``."""
    valid = list(valid)
    for key in kwargs:
        if key not in valid:
            raise TypeError(unknown_message(f"argument for {kind}", key, valid))


def signature_params(fn: Callable) -> list[str]:
    """Names of keyword-usable parameters of ``fn`` (for validating overrides)."""
    sig = inspect.signature(fn)
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]


class Registry(Generic[T]):
    """Maps names to entries; ``get`` raises a KeyError that suggests the closest name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, *, overwrite: bool = False) -> None:
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(unknown_message(self.kind, name, self._entries))
        return self._entries[name]

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._entries)
        if pattern:
            names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        return names

    def __contains__(self, name: str) -> bool:
        return name in self._entries

"""A small named registry with closest-match error messages, shared by models, tasks and experiments."""

from __future__ import annotations

import collections.abc
import difflib
import fnmatch
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from seqzoo.errors import ConfigError, ConfigTypeError, SeqzooError, UnknownArgumentError, UnknownNameError  # noqa: F401

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
    """Raise an ``UnknownArgumentError`` naming the closest valid key for each unknown key in ``kwargs``."""
    valid = list(valid)
    for key in kwargs:
        if key not in valid:
            raise UnknownArgumentError(unknown_message(f"argument for {kind}", key, valid))


def _type_hints(fn: Callable) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation that does not evaluate here: check nothing rather than guess
        return {}


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (types this check does not understand always fit)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(_matches(v, inner) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        inner = typing.get_args(hint)
        return "a list" + (f" of {_describe(inner[0])}" if inner and inner[-1] is not Ellipsis and len(inner) == 1
                           else "")
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def check_types(kind: str, fn: Callable, kwargs: dict[str, Any]) -> None:
    """Raise a ``ConfigError`` naming the key when a value does not fit ``fn``'s annotation for it.

    Runs before ``fn`` is called, so ``seq_len="abc"`` says "seq_len must be an integer" instead of failing
    somewhere inside with a comparison between str and int.
    """
    hints = _type_hints(fn)
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is not None and not _matches(value, hint):
            raise ConfigTypeError(f"{kind}: argument {key!r} must be {_describe(hint)}, got {value!r} "
                              f"({type(value).__name__})")


def signature_params(fn: Callable) -> list[str]:
    """Names of keyword-usable parameters of ``fn`` (for validating overrides)."""
    sig = inspect.signature(fn)
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]


def build_checked(kind: str, name: str, fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    """``fn(**kwargs)`` for registered ``name`` after the annotation check; a ``ValueError`` the builder raises to
    reject a value (sizes, choices) becomes a ``ConfigError`` naming the model or task."""
    check_types(f"{kind} {name!r}", fn, kwargs)
    try:
        return fn(**kwargs)
    except ValueError as err:
        if isinstance(err, SeqzooError):
            raise
        msg = str(err)
        raise ConfigError(msg if msg.startswith(name) else f"{kind} {name!r}: {msg}") from err


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

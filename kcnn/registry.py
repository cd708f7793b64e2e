"""A small name -> builder registry with helpful look-up errors."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable


class UnknownNameError(ValueError, KeyError):
    """Raised when a registry look-up fails; it is both a ValueError and a KeyError."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    """One registered builder and the metadata it was registered with."""

    name: str
    fn: Callable[..., Any]
    metadata: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Maps names to builder functions.

    Registering a name twice raises; a failed look-up lists what exists and the
    closest name; ``list(pattern)`` filters names with fnmatch.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | None = None, **metadata: Any) -> Callable:
        """Decorator: ``@REGISTRY.register("resnet50", input_shape=(224, 224, 3))``."""

        def decorator(fn: Callable) -> Callable:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = Entry(key, fn, dict(metadata))
            return fn

        return decorator

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def get(self, name: str) -> Callable:
        return self.entry(name).fn

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

    def _unknown_message(self, name: object) -> str:
        known = self.list()
        message = f"unknown {self.kind} {name!r}."
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
        if close:
            message += f" Did you mean {close[0]!r}?"
        return message + f" Available: {', '.join(known)}."

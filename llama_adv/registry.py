"""Plain name -> factory registries with errors that list the valid names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from llama_adv.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict from name to factory whose lookups fail with the valid options.

    Args:
      kind: what the registry holds ("model", "method", ...), used in messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``factory`` under ``name``."""

        def add(factory: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory

        return add

    def get(self, name: str, *, field: str | None = None) -> T:
        """Returns the factory for ``name``, or raises UserError naming the options."""
        if name in self._entries:
            return self._entries[name]
        where = f" (config field {field})" if field else ""
        close = difflib.get_close_matches(name, self._entries, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(
            f"Unknown {self.kind} {name!r}{where}.{hint} "
            f"Valid {self.kind}s: {', '.join(sorted(self._entries))}."
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

"""timm-style name registries: ``@register_method("e2d")`` instead of if/elif chains."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import TinysetError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories with a one-line description each (shown by ``tinyset <kind>s``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise TinysetError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            text = doc or (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._docs[name] = text if isinstance(text, str) else (text[0] if text else "")
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise TinysetError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def describe(self, name: str) -> str:
        return self._docs.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

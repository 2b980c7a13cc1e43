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
            raise TinysetError(f"unknown {self.kind} {name!r}; {self.suggest(name)}known: {', '.join(sorted(self._entries)) or 'none'}") from None

    def suggest(self, name: str) -> str:
        """``"did you mean 'e2d'? "`` for a near miss, else an empty string."""
        import difflib

        close = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.6)
        return f"did you mean {close[0]!r}? " if close else ""

    def describe(self, name: str) -> str:
        return self._docs.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

"""Named self-supervised objectives (``tinyset teacher --ssl NAME``)."""
from __future__ import annotations

from ..registry import Registry

SSL_METHODS: Registry[type] = Registry("self-supervised method")


def register_ssl(name: str, doc: str | None = None):
    return SSL_METHODS.register(name, doc)

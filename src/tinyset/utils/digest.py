"""Short, stable hashes of JSON-able identities: cache keys and "is this the same run?" checks.

Every key built from a JSON identity goes through here, so two spellings of one rule cannot drift
apart (a changed digest would orphan everything cached under the old one)."""
from __future__ import annotations

import hashlib
import json


def json_digest(obj, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj`` as sorted-key JSON (non-JSON values by str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def folder_key(name: str, tag: str, ident: dict) -> str:
    """A cache folder name a person can read: ``name`` (last 40 safe characters), ``tag``, then a
    12-digit digest of ``ident`` (everything that makes the cached thing what it is)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[-40:]
    return f"{safe}-{tag}-{json_digest(ident, 12)}"

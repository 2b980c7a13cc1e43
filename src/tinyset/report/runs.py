"""What the report reads from a run directory: the manifest, eval.json, log.jsonl and preview.png.
Missing pieces (a run evaluated elsewhere, an imported set without a log) are simply absent."""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..artifact.format import MANIFEST_FILE, PREVIEW_FILE, load_artifact
from ..errors import TinysetError

log = logging.getLogger(__name__)


@dataclass
class RunData:
    path: Path
    manifest: dict
    eval: dict | None = None
    preview_png: bytes | None = None
    events: dict[str, list[dict]] = field(default_factory=dict)  # event name -> records in order

    @property
    def label(self) -> str:
        return f"{self.manifest.get('method')} ipc{self.manifest.get('ipc')} ({self.path.name})"

    def accuracy(self, which: str = "distilled") -> tuple[str, float, float] | None:
        """(label mode, mean, std) of the first label mode (soft preferred) for ``which`` set."""
        rows = (self.eval or {}).get("rows") or []
        for mode in ("soft", "hard"):
            for r in rows:
                if r.get("label_mode") == mode and r.get("set") == which:
                    return mode, float(r["accuracy_mean"]), float(r["accuracy_std"])
        return None


def read_log(path: Path) -> dict[str, list[dict]]:
    events: dict[str, list[dict]] = defaultdict(list)
    if not path.is_file():
        return {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a run killed mid-line leaves a torn last line; skip it
            log.warning("%s line %d is not JSON; skipped", path, n)
            continue
        if isinstance(rec, dict) and "event" in rec:
            events[str(rec["event"])].append(rec)
    return dict(events)


def read_run(path: str | Path) -> RunData:
    path = Path(path)
    if not (path / MANIFEST_FILE).is_file():
        raise TinysetError(f"{path} is not a tinyset run (no {MANIFEST_FILE})")
    art = load_artifact(path, verify=False)
    ev = None
    if (path / "eval.json").is_file():
        try:
            ev = json.loads((path / "eval.json").read_text())
        except json.JSONDecodeError:
            raise TinysetError(f"{path / 'eval.json'} is not valid JSON") from None
    preview = (path / PREVIEW_FILE).read_bytes() if (path / PREVIEW_FILE).is_file() else None
    return RunData(path, art.manifest, ev, preview, read_log(path / "log.jsonl"))

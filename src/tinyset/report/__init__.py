"""``tinyset report RUN [RUN ...] --out report.html``: one self-contained page per comparison (the
per-class image grid of every run, the table against the random subset, accuracy against images
per class and against stored bytes, synthesis cost, E2D's crop-memory curve and the loss curves of
``log.jsonl``), with every figure also written as a PNG beside it."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import TinysetError
from ..utils.files import atomic_path, atomic_write_text
from . import figures as F
from .html import img, page
from .runs import RunData, read_run

log = logging.getLogger(__name__)

__all__ = ["write_report", "read_run", "RunData"]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_report(runs: list[str | Path], out: str | Path, title: str = "tinyset report") -> Path:
    """Write ``out`` (HTML) and ``<out stem>_figures/*.png``; return the HTML path."""
    if not runs:
        raise TinysetError("report needs at least one run directory")
    data = [read_run(r) for r in runs]
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise TinysetError(f"report output {out} should end in .html")
    fig_dir = out.parent / f"{out.stem}_figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    multi = len({str(r.path.resolve()) for r in data}) > 1

    def emit(png: bytes | None, name: str, caption: str, width: int | None = None) -> list[str]:
        if png is None:
            return []
        with atomic_path(fig_dir / f"{_safe(name)}.png") as tmp:
            tmp.write_bytes(png)
        return [img(png, _safe(name), caption, width)]

    grids = []
    for i, r in enumerate(data):
        if r.preview_png:
            grids += emit(r.preview_png, f"grid_{i}_{r.path.name}", f"images per class: {r.label}", width=None)
    comparison = []
    if multi:
        comparison += emit(F.accuracy_vs(data, lambda r: r.manifest.get("ipc"), "images per class"), "accuracy_vs_ipc",
                           "accuracy against images per class (dashed: random subset)")
        comparison += emit(F.accuracy_vs(data, lambda r: r.manifest.get("total_bytes"), "stored bytes", logx=True),
                           "accuracy_vs_bytes", "accuracy against stored bytes")
    cost = emit(F.synthesis_cost(data), "synthesis_cost", "synthesis time and teacher passes")
    memory, losses = [], []
    for i, r in enumerate(data):
        memory += emit(F.crop_memory(r), f"crop_memory_{i}_{r.path.name}", f"E2D crop memory: {r.label}")
        losses += emit(F.loss_curves(r), f"loss_{i}_{r.path.name}", f"loss curves: {r.label}")
    sections = [("Images per class", grids), ("Comparison", comparison), ("Synthesis cost", cost),
                ("Crop memory", memory), ("Loss curves", losses)]
    atomic_write_text(out, page(title, data, sections))
    log.info("report: %s (%d runs), figures in %s", out, len(data), fig_dir)
    return out

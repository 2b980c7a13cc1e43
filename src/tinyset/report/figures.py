"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg canvas) and
returned as PNG bytes. Each function returns None when the runs lack what it needs."""
from __future__ import annotations

import io
from collections import defaultdict

from .runs import RunData

DPI = 100
SIZE = (6.4, 4.0)


def _figure(ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(SIZE[0] * (1 if ncols == 1 else 0.8 * ncols), SIZE[1]), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _by_method(runs: list[RunData], x_of) -> dict[str, list[tuple[float, float, float, float | None]]]:
    """method -> sorted [(x, mean, std, random mean)] over runs that were evaluated."""
    out = defaultdict(list)
    for r in runs:
        acc = r.accuracy()
        if acc is None:
            continue
        base = r.accuracy("random")
        out[str(r.manifest.get("method"))].append((x_of(r), acc[1], acc[2], base[1] if base else None))
    return {m: sorted(v) for m, v in out.items()}


def accuracy_vs(runs: list[RunData], x_of, xlabel: str, logx: bool = False) -> bytes | None:
    series = _by_method(runs, x_of)
    if sum(len(v) for v in series.values()) < 2:  # one point is not a curve
        return None
    fig, (ax,) = _figure()
    for method, pts in series.items():
        xs, ms, ss, bs = zip(*pts)
        line = ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=method)
        if any(b is not None for b in bs):
            bx = [x for x, b in zip(xs, bs) if b is not None]
            ax.plot(bx, [b for b in bs if b is not None], linestyle="--", marker="x", color=line[0].get_color(),
                    alpha=0.6, label=f"{method}: random subset")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def synthesis_cost(runs: list[RunData]) -> bytes | None:
    rows = [(r.label, (r.manifest.get("synthesis") or {})) for r in runs]
    rows = [(n, s) for n, s in rows if "seconds" in s]
    if not rows:
        return None
    fig, (a1, a2) = _figure(2)
    names = [n for n, _ in rows]
    a1.barh(names, [s.get("seconds", 0.0) for _, s in rows], color="tab:blue")
    a1.set_xlabel("synthesis seconds")
    fwd = [s.get("teacher_forward_images", 0) for _, s in rows]
    bwd = [s.get("teacher_backward_images", 0) for _, s in rows]
    ys = list(range(len(rows)))
    a2.barh([y - 0.2 for y in ys], fwd, height=0.4, label="forward", color="tab:green")
    a2.barh([y + 0.2 for y in ys], bwd, height=0.4, label="backward", color="tab:red")
    a2.set_yticks(ys, [""] * len(ys))
    a2.set_xlabel("teacher images")
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _unit_series(run: RunData, field: str) -> dict[str, tuple[list[float], list[float]]]:
    out = {}
    for event, recs in run.events.items():
        pts = [(r["it"], r[field]) for r in recs if isinstance(r.get("it"), (int, float)) and isinstance(r.get(field), (int, float))]
        if pts:
            out[event] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def crop_memory(run: RunData) -> bytes | None:
    series = _unit_series(run, "crops_in_memory")
    if not series:
        return None
    fig, (ax,) = _figure()
    for event, (xs, ys) in series.items():
        ax.plot(xs, ys, marker=".", alpha=0.7, label=event if len(series) <= 10 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("crops in memory")
    ax.set_title(f"E2D crop memory: {run.label}", fontsize=9)
    ax.grid(alpha=0.3)
    if len(series) <= 10:
        ax.legend(fontsize=7)
    return _png(fig)


def loss_curves(run: RunData) -> bytes | None:
    synth = _unit_series(run, "ce")
    train = {}
    for event, recs in run.events.items():
        pts = [(r["epoch"], r["loss"]) for r in recs if isinstance(r.get("epoch"), (int, float)) and isinstance(r.get("loss"), (int, float))]
        if pts:
            train[event] = pts
    if not synth and not train:
        return None
    panels = [p for p in ((synth, "synthesis CE"), (train, "training loss")) if p[0]]
    fig, axes = _figure(len(panels))
    for ax, (data, title) in zip(axes, panels):
        if title == "synthesis CE":
            for event, (xs, ys) in data.items():
                ax.plot(xs, ys, alpha=0.7, label=event if len(data) <= 10 else None)
            ax.set_xlabel("iteration")
        else:
            for event, pts in data.items():
                ax.plot([p[0] for p in pts], [p[1] for p in pts], alpha=0.8, label=event if len(data) <= 10 else None)
            ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(data) <= 10:
            ax.legend(fontsize=7)
    fig.suptitle(f"log.jsonl: {run.label}", fontsize=9)
    return _png(fig)

"""The report page: one self-contained HTML file (styles inline, every image a base64 data URI).

A small inline script records each figure's on-screen box in ``data-rect`` after load, so a
headless browser's DOM dump says where to look in its screenshot (the CI test uses that)."""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone

from .runs import RunData

STYLE = """
body { font-family: sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 24px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #eee; } td.text { text-align: left; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
img.figure { display: block; border: 1px solid #ccc; image-rendering: pixelated; }
"""

SCRIPT = """
window.addEventListener('load', function () {
  document.querySelectorAll('img.figure').forEach(function (im) {
    var r = im.getBoundingClientRect();
    im.setAttribute('data-rect', [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map(Math.round).join(','));
  });
  document.body.setAttribute('data-ready', '1');
});
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def img(png: bytes, name: str, caption: str, width: int | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    w = f' width="{width}"' if width else ""
    return (f'<figure><img class="figure" id="fig-{esc(name)}" alt="{esc(caption)}"{w} '
            f'src="data:image/png;base64,{data}"><figcaption>{esc(caption)}</figcaption></figure>')


def fmt_acc(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def results_table(runs: list[RunData]) -> str:
    head = ("<tr><th>run</th><th>method</th><th>IPC</th><th>label mode</th><th>set</th><th>seeds</th>"
            "<th>accuracy % (mean ± std)</th><th>vs random</th></tr>")
    rows = []
    for r in runs:
        ev = r.eval or {}
        imp = ev.get("improvement_over_random") or {}
        for row in ev.get("rows") or []:
            delta = f"{imp[row['label_mode']]:+.2f}" if row.get("set") == "distilled" and row.get("label_mode") in imp else ""
            rows.append(
                f'<tr class="result"><td class="text">{esc(r.path.name)}</td><td class="text">{esc(r.manifest.get("method"))}</td>'
                f'<td>{esc(r.manifest.get("ipc"))}</td><td class="text">{esc(row["label_mode"])}</td>'
                f'<td class="text">{esc(row["set"])}</td><td>{esc(row["seeds"])}</td>'
                f'<td class="acc">{fmt_acc(row["accuracy_mean"], row["accuracy_std"])}</td><td class="delta">{delta}</td></tr>')
    if not rows:
        return "<p>No run has an eval.json yet (run <code>tinyset eval RUN</code>).</p>"
    return f'<table id="results">{head}{"".join(rows)}</table>'


def cost_table(runs: list[RunData]) -> str:
    head = ("<tr><th>run</th><th>images</th><th>stored bytes</th><th>synthesis s</th><th>teacher fwd images</th>"
            "<th>teacher bwd images</th><th>iterations run</th><th>ranks</th></tr>")
    rows = []
    for r in runs:
        m, s = r.manifest, r.manifest.get("synthesis") or {}
        n = (m.get("components", {}).get("images") or {}).get("shape", ["?"])[0]
        rows.append(
            f'<tr><td class="text">{esc(r.path.name)}</td><td>{esc(n)}</td><td>{esc(m.get("total_bytes"))}</td>'
            f'<td>{s.get("seconds", 0.0):.2f}</td><td>{esc(s.get("teacher_forward_images", ""))}</td>'
            f'<td>{esc(s.get("teacher_backward_images", ""))}</td><td>{esc(s.get("iterations_run", ""))}</td>'
            f'<td>{esc(s.get("world_size", 1))}</td></tr>')
    return f'<table id="cost">{head}{"".join(rows)}</table>'


def page(title: str, runs: list[RunData], sections: list[tuple[str, list[str]]]) -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = [f"<h1>{esc(title)}</h1>",
            f"<p>{len(runs)} run(s): {', '.join(esc(r.path) for r in runs)}. Generated {stamp} by tinyset.</p>",
            "<h2>Accuracy against the random real subset</h2>", results_table(runs),
            "<h2>Cost</h2>", cost_table(runs)]
    for heading, figs in sections:
        if figs:
            body += [f"<h2>{esc(heading)}</h2>", f'<div class="figs">{"".join(figs)}</div>']
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>"
            f"<body>{''.join(body)}</body></html>\n")

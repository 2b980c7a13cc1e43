"""``tinyset report``: the self-contained page and its PNG figures, and the page rendered in a real
browser (headless Chromium): the DOM dump holds eval.json's numbers, the screenshot's image areas
are not blank. The browser test skips, naming what is missing, where Chromium is not installed
(``.ci/run`` installs Debian's ``chromium`` when it can)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
from PIL import Image, ImageStat

from tinyset import cli
from tinyset.config import EvalConfig, RunConfig
from tinyset.errors import TinysetError
from tinyset.jobs.distill import distill
from tinyset.report import write_report

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# flags for a sandboxless CI container on a network that must not be contacted
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--force-device-scale-factor=1", "--virtual-time-budget=5000")
WINDOW = (1280, 2400)


def _chromium() -> str | None:
    env = os.environ.get("TINYSET_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_teacher_cfg, digits_teacher):
    """Two small evaluated runs at different IPC (so the comparison figures have a curve)."""
    root = tmp_path_factory.mktemp("report")
    out = []
    for ipc in (1, 2):
        cfg = RunConfig(method="e2d", ipc=ipc, device="cpu", teacher=small_teacher_cfg)
        cfg.method_args = {"iterations": 12, "batch_size": 20, "log_every": 2}
        cfg.eval = EvalConfig(student="convnet:depth=2,width=8", epochs=2, seeds=2, batch_size=20)
        distill(cfg, root / f"e2d-ipc{ipc}", progress=False)
        out.append(root / f"e2d-ipc{ipc}")
    return out


def test_report_is_self_contained_with_every_figure_as_png(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html")
    html = page.read_text()
    figs = sorted(p.name for p in (tmp_path / "report_figures").glob("*.png"))
    for name in ("accuracy_vs_ipc", "accuracy_vs_bytes", "synthesis_cost", "grid_0_e2d-ipc1", "crop_memory_1_e2d-ipc2",
                 "loss_0_e2d-ipc1"):
        assert f"{name}.png" in figs, figs
    assert html.count('src="data:image/png;base64,') == len(figs)  # every figure embedded, none linked
    assert not re.search(r'(src|href)="(?!data:)', html)
    for run in runs:
        for row in json.loads((run / "eval.json").read_text())["rows"]:
            assert f"{row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f}" in html
    for f in figs:  # real PNGs with content
        with Image.open(tmp_path / "report_figures" / f) as im:
            assert im.size[0] > 50 and max(ImageStat.Stat(im.convert("L")).stddev) > 5


def test_report_cli_and_errors(runs, tmp_path, capsys):
    assert cli.main(["report", str(runs[0]), "--out", str(tmp_path / "one.html")]) == 0
    assert "one.html" in capsys.readouterr().out
    html = (tmp_path / "one.html").read_text()
    assert "accuracy_vs_ipc" not in html  # a single run has no comparison curve
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 2
    assert "is not a tinyset run" in capsys.readouterr().err
    with pytest.raises(TinysetError, match="should end in .html"):
        write_report(runs, tmp_path / "report.txt")


def _browser(args: list[str], url: str, timeout: int = 90) -> subprocess.CompletedProcess:
    exe = _chromium()
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile every time
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                               *args, url], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not found (install Debian's `chromium` package, "
                    "as .ci/run does, or set TINYSET_CHROMIUM to a Chrome/Chromium binary)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    page = write_report(runs, tmp_path / "report.html")
    url = page.resolve().as_uri()
    dom = _browser(["--dump-dom"], url)
    assert dom.returncode == 0 and "<table" in dom.stdout, dom.stderr[-1500:]
    assert 'data-ready="1"' in dom.stdout  # the page's load handler ran
    cells = re.findall(r'<td class="acc">([^<]*)</td>', dom.stdout)
    expected = [f"{r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f}"
                for run in runs for r in json.loads((run / "eval.json").read_text())["rows"]]
    assert cells == expected
    rects = [tuple(map(int, m.split(","))) for m in re.findall(r'data-rect="([^"]+)"', dom.stdout)]
    assert len(rects) == len(list((tmp_path / "report_figures").glob("*.png")))

    shot = tmp_path / "shot.png"
    r = _browser([f"--screenshot={shot}"], url)
    assert shot.is_file(), r.stderr[-1500:]
    with Image.open(shot) as im:
        im = im.convert("RGB")
        assert im.size == WINDOW
        visible = [(x, y, w, h) for x, y, w, h in rects if y + h <= WINDOW[1] and w > 20 and h > 20]
        assert len(visible) >= 4  # the grids and the first figures are on the first screen
        for x, y, w, h in visible:
            area = im.crop((x + 2, y + 2, x + w - 2, y + h - 2))  # inside the 1px border
            stat = ImageStat.Stat(area)
            assert max(stat.stddev) > 10, f"image area {(x, y, w, h)} is blank"
            assert len(area.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 8

"""The manual builds with ``mkdocs build --strict`` (a broken link or anchor, a missing page or a
page left out of the nav fails it), and the README stays the front door: short, the two commands
first, the findings, and links that lead somewhere."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _mkdocs():
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.skip("mkdocs is not installed: pip install -e '.[test]' (it is in the test extras) to build the docs")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # not --quiet: it hides the warnings that --strict counts, and the build would pass
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=config.parent)


def test_docs_build_strict(tmp_path):
    _mkdocs()
    out = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stdout}\n{out.stderr}"
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "cli" / "index.html").is_file()


@pytest.mark.parametrize("bad, named", [
    ("[gone](no-such-page.md)", "no-such-page.md"),
    ("[gone](cli.md#no-such-heading)", "no-such-heading"),
])
def test_strict_build_fails_on_a_broken_link(tmp_path, bad, named):
    _mkdocs()
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "methods.md"
    page.write_text(page.read_text() + f"\n{bad}\n")
    out = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert out.returncode != 0 and named in out.stdout + out.stderr, out.stdout + out.stderr


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_is_in_the_nav():
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert cfg["strict"] is True
    pages = _nav_pages(cfg["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(pages) == on_disk, f"nav {sorted(pages)} vs docs/ {on_disk}"


def _slug(heading: str) -> str:
    from markdown.extensions.toc import slugify  # mkdocs' default heading ids

    return slugify(re.sub(r"[`*]", "", heading), "-")


def test_readme_is_the_front_door():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert first_block.splitlines()[0].startswith("make demo") and first_block.splitlines()[1].startswith("make test")
    assert "\n## Findings\n" in text
    findings = text.split("\n## Findings\n", 1)[1].split("\n## ", 1)[0]
    assert len(re.findall(r"^### ", findings, re.M)) >= 3, "one subsection per method family"
    assert findings.count("\n|---") >= 3, "a results table per method family"
    for page in DOCS.glob("*.md"):
        assert f"(docs/{page.name}" in text, f"README does not link docs/{page.name}"
    assert "(CONTRIBUTING.md)" in text


def test_readme_links_lead_somewhere():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else README
        assert file.exists(), f"README links {target}: no such file"
        if anchor and file.suffix == ".md":
            ids = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}
            assert anchor in ids, f"README links {target}: no heading with that id in {path or 'README.md'}"


def test_the_manual_shows_every_current_benchmark_table(monkeypatch):
    """docs/benchmarks.md carries each results table exactly as its benchmark wrote it (a table
    rerun without `python benchmarks/update_readme.py` once left the manual quoting archived rows)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import update_readme

    manual = (ROOT / "docs" / "benchmarks.md").read_text()
    stale = [part.rsplit("`benchmarks/results/", 1)[1].rstrip("`)") for part in update_readme.sections() if part not in manual]
    assert not stale, f"run `python benchmarks/update_readme.py`: docs/benchmarks.md is stale for {stale}"

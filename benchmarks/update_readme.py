"""Copy the benchmark tables (benchmarks/results/*.md) into docs/benchmarks.md between markers, so
the manual shows exactly what the benchmark commands wrote (the README's findings quote them)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- benchmark tables: start -->", "<!-- benchmark tables: end -->"


def sections() -> list[str]:
    """Each results table as the manual shows it (smoke tables left out)."""
    parts = []
    for md in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        if md.stem.endswith("_smoke"):  # a smoke run proves a script works; its numbers are not results
            continue
        text = md.read_text().strip()
        text = re.sub(r"^# ", "### ", text, count=1)  # demote the title under the page's section
        parts.append(f"{text}\n\n(from `benchmarks/results/{md.name}`)")
    return parts


def main() -> None:
    parts = sections()
    readme = ROOT / "docs" / "benchmarks.md"
    body = readme.read_text()
    if START not in body:
        raise SystemExit(f"{readme} has no {START} marker")
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{chr(10).join(p + chr(10) for p in parts)}{END}{tail}")
    print(f"updated {readme} with {len(parts)} tables")


if __name__ == "__main__":
    main()

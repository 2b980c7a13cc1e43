"""Copy the benchmark tables (benchmarks/results/*.md) into docs/benchmarks.md between markers, so
the manual shows exactly what the benchmark commands wrote (the README's findings quote them).

Every benchmark calls ``refresh`` itself after each row it writes to the committed results folder
(``common.Rows``), so a rerun cannot leave the manual stale; running this script by hand redoes it."""
from __future__ import annotations

import re
from pathlib import Path

from tinyset.utils.files import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MANUAL = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- benchmark tables: start -->", "<!-- benchmark tables: end -->"


def sections(results: Path = RESULTS) -> list[str]:
    """Each results table as the manual shows it (smoke tables left out)."""
    parts = []
    for md in sorted(Path(results).glob("*.md")):
        if md.stem.endswith("_smoke"):  # a smoke run proves a script works; its numbers are not results
            continue
        text = md.read_text().strip()
        text = re.sub(r"^# ", "### ", text, count=1)  # demote the title under the page's section
        parts.append(f"{text}\n\n(from `benchmarks/results/{md.name}`)")
    return parts


def refresh(results: Path = RESULTS, manual: Path = MANUAL) -> int:
    """Rewrite the block between the manual's markers with the current tables; returns how many.
    Written atomically, so a reader (or a crash) never sees half a page."""
    manual = Path(manual)
    head, start, rest = manual.read_text().partition(START)
    _, end, tail = rest.partition(END)
    if not (start and end):
        raise ValueError(f"{manual} has no {START} ... {END} block")
    parts = sections(results)
    atomic_write_text(manual, f"{head}{START}\n{chr(10).join(p + chr(10) for p in parts)}{END}{tail}")
    return len(parts)


def main() -> None:
    try:
        n = refresh()
    except ValueError as err:
        raise SystemExit(str(err)) from None
    print(f"updated {MANUAL} with {n} tables")


if __name__ == "__main__":
    main()

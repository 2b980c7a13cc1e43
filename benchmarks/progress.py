"""Where the benchmarks stand, for a session that continues one split over several: the rows each
results file holds (seeds, mean ± std) and the seeds finished under the work folder, so a row in
progress (seeds kept, no row yet) shows up before its rerun finishes it. Reads files only.

    python benchmarks/progress.py            # every results file and every work folder
    python benchmarks/progress.py decoupled  # names containing this
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from common import RESULTS, WORK

SEED_DIR = re.compile(r"^(?P<row>.+)-seed(?P<seed>\d+)$")  # decoupled.py: one folder per seed (bench_seed.json)
SEED_FILE = re.compile(r"^seed(?P<seed>\d+)\.json$")  # common.paired_seeds: one file per seed in the row's folder


def result_rows(results: Path) -> dict[str, list[dict]]:
    out = {}
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: not readable as a results file ({e})") from None
        if isinstance(data, dict) and "rows" in data:
            out[path.stem] = data["rows"]
    return out


def finished_seeds(work: Path) -> dict[str, list[int]]:
    """Work-folder row -> the seeds whose record is written (a seed in progress has none yet)."""
    seeds: dict[str, list[int]] = defaultdict(list)
    if not work.is_dir():
        return {}
    for f in sorted(work.rglob("bench_seed.json")):
        if m := SEED_DIR.match(f.parent.name):
            seeds[m["row"]].append(int(m["seed"]))
    # any depth: quadd.py keeps a row's seeds in work/quadd-<part>-v2/seeds/ROW/
    for f in sorted(work.rglob("seed*.json")):
        if fm := SEED_FILE.match(f.name):
            seeds[f.parent.relative_to(work).as_posix()].append(int(fm["seed"]))
    return {k: sorted(v) for k, v in seeds.items() if v}


def report(results: Path, work: Path, pattern: str = "") -> list[str]:
    lines = []
    for name, rows in result_rows(results).items():
        if pattern not in name or name.endswith("_smoke"):  # smoke numbers mean nothing
            continue
        scored = [r for r in rows if isinstance(r.get("accuracy_mean"), (int, float))]
        lines.append(f"{name}: {len(rows)} rows" + ("" if scored else " (a timing table)"))
        for r in scored:
            what = " ".join(str(r[k]) for k in ("dataset", "method", "ipc", "bits", "student", "protocol")
                            if r.get(k) is not None)
            lines.append(f"  {what}: {r.get('seeds', '?')} seeds, {r['accuracy_mean']:.2f} ± {r.get('accuracy_std') or 0:.2f}")
    lines.append(f"work folder {work}: seeds finished per row")
    for row, seeds in finished_seeds(work).items():
        if pattern in row:
            lines.append(f"  {row}: {len(seeds)} ({', '.join(map(str, seeds))})")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pattern", nargs="?", default="", help="only results files and work rows whose name contains this")
    args = p.parse_args()
    print("\n".join(report(RESULTS, WORK, args.pattern)))


if __name__ == "__main__":
    main()

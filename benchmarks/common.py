"""Shared plumbing of the benchmarks: one rows format, written after every finished row, resumed
from the rows already there, rendered as a markdown table with the command that reproduces it."""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import time

import torch
import torch.nn.functional as F

from tinyset.utils.files import atomic_write_text
from tinyset.utils.runlog import machine_description

# Tests (and anyone keeping results elsewhere) point these at other folders; the defaults are the
# committed results/ and the git-ignored work/ beside this file.
RESULTS = Path(os.environ.get("TINYSET_BENCH_RESULTS") or Path(__file__).parent / "results")
WORK = Path(os.environ.get("TINYSET_BENCH_WORK") or Path(__file__).parent / "work")
# The manual that quotes every committed table (docs/benchmarks.md), keyed by the results folder it
# quotes. A table written to the committed folder refreshes it at once: a results commit that forgot
# the refresh once turned CI red. Results kept anywhere else (tests, TINYSET_BENCH_RESULTS) leave
# the manual alone.
MANUALS: dict[Path, Path] = {
    (Path(__file__).parent / "results").resolve(): Path(__file__).parent.parent / "docs" / "benchmarks.md"}

log = logging.getLogger("benchmarks.common")


def commit(where: Path | None = None) -> str:
    """The short commit of the checkout holding ``where`` (default: these benchmark scripts), +dirty if a
    tracked file changed. ``benchmarks/results/`` and the manual quoting it do not count: a run rewrites its
    own table there (and the manual's copy), and a re-render would otherwise mark itself dirty."""
    cwd = where or Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=cwd)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)benchmarks/results",
                                ":(top,exclude)docs/benchmarks.md"], capture_output=True, text=True,
                               cwd=cwd).stdout.strip()
        return (out.stdout.strip() + ("+dirty" if dirty else "")) if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def src_commit() -> str:
    """The commit of the tinyset package this process imported. Long runs import it from a fixed
    snapshot (``PYTHONPATH=<worktree>/src``) while the scripts' checkout moves on, so a row records
    both: ``row_commit`` (the scripts' checkout when the row was written) and ``src_commit``."""
    import tinyset

    return commit(Path(tinyset.__file__).resolve().parent)


class Rows:
    """``NAME.json`` in the benchmark rows format; ``add`` rewrites it atomically after each row."""

    def __init__(self, name: str, title: str, command: str, notes: list[str] | None = None,
                 columns: list[tuple[str, str]] | None = None):
        self.name, self.title, self.command, self.notes, self.columns = name, title, command, notes or [], columns
        # rows -> lines under the table, recomputed at every write so a table stopped by --max-minutes
        # still shows what its finished rows answer (claims, gaps, ratios)
        self.findings: Callable[[list[dict]], list[str]] | None = None
        # rows -> a summary block between the table and the findings (a pivot of the rows, say)
        self.summary: Callable[[list[dict]], list[str]] | None = None
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.path = RESULTS / f"{name}.json"
        self.data = {"benchmark": name, "commit": commit(), "machine": machine_description(), "command": command, "rows": []}
        self.src_commit = src_commit()  # at start: the package code this run imported and keeps using
        if self.path.exists():
            old = json.loads(self.path.read_text())
            # rows written before rows kept their own command: the file's last command is the best record
            self.data["rows"] = [{"command": old["command"], **r} if old.get("command") else r for r in old.get("rows", [])]

    def key(self, row: dict) -> tuple:
        return (row["dataset"], row["method"], row["ipc"], row.get("eval_loss", "kd"))

    def has(self, **key) -> dict | None:
        for r in self.data["rows"]:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, row: dict) -> None:
        # each row keeps the command and commit that produced it: a table filled by several partial
        # runs (--rows, --only, --max-minutes pieces) is reproduced by the list of its rows' commands
        row = {**row, "command": row.get("command", self.command), "row_commit": row.get("row_commit", commit()),
               "src_commit": row.get("src_commit", self.src_commit)}
        self.data["rows"] = [r for r in self.data["rows"] if self.key(r) != self.key(row)] + [row]
        self.data["commit"] = commit()
        self.data["machine"] = machine_description()
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=float))
        self.write_markdown()

    def write_markdown(self, columns: list[tuple[str, str]] | None = None) -> None:
        columns = columns or self.columns or [
            ("method", "method"), ("ipc", "IPC"), ("eval_loss", "eval loss"), ("seeds", "seeds"),
            ("accuracy", "accuracy % (mean ± std)"), ("synthesis_seconds", "synthesis s"),
            ("teacher_backward_images", "teacher fwd+bwd images"), ("teacher_forward_images", "teacher fwd images"),
            ("throughput_ratio", "synth. / bare teacher throughput"), ("iterations_run", "iterations run"),
        ]
        commands = list(dict.fromkeys(r["command"] for r in self.data["rows"] if r.get("command"))) or [self.command]
        lines = [f"# {self.title}", "", f"Machine: {self.data['machine']}. Commit: {self.data['commit']}.", "",
                 "Reproduce with" + (" (the rows' commands, in order):" if len(commands) > 1 else ":"), "",
                 "```", *commands, "```", ""]
        lines += [f"- {n}" for n in self.notes]
        lines += ["", "| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
        for r in self.data["rows"]:
            cells = []
            for key, _ in columns:
                if key == "accuracy":
                    cells.append(f"{r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f}")
                else:
                    v = r.get(key, "")
                    cells.append(f"{v:.2f}" if isinstance(v, float) else str(v if v is not None else ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines += self.summary(self.data["rows"]) if self.summary else []
        found = self.findings(self.data["rows"]) if self.findings else []
        if found:
            lines += ["", "**Findings** (computed from the rows above):", ""] + [f"- {f}" for f in found]
        atomic_write_text(RESULTS / f"{self.name}.md", "\n".join(lines) + "\n")
        refresh_manual()


def refresh_manual() -> None:
    """Copy the tables of RESULTS into the manual that quotes them, if any. The row is already kept,
    so a manual that cannot be refreshed is a warning naming the fix, not a lost run."""
    manual = MANUALS.get(Path(RESULTS).resolve())
    if manual is None or not manual.exists():
        return
    import update_readme  # beside this file; imported here, where it is used, not at every script's start

    try:
        update_readme.refresh(RESULTS, manual)
    except (ValueError, OSError) as err:
        log.warning("docs/benchmarks.md not refreshed (%s); run `python benchmarks/update_readme.py`", err)


class TimeUp(Exception):
    """Raised by ``Deadline.check()`` deep inside a benchmark's loops; ``main`` catches it and stops."""


class Deadline:
    """``--max-minutes``: a benchmark checks ``passed()`` before each row (or seed) and stops cleanly
    once the time is spent; the rows and seeds already written let a rerun of the same command
    continue where this one stopped. Before a seed, ``start_seed()`` also stops when
    a seed as long as the last one this run finished would end past the limit: an IPC-50 seed takes
    up to 20 min here, and a session that sets M to its own end must not start one it cannot finish."""

    def __init__(self, minutes: float | None):
        self.minutes = minutes
        self.t0 = time.monotonic()
        self.told = False
        self.last_seed = 0.0  # seconds the last seed of this run took (start_seed / end_seed)
        self._seed_t0 = self.t0

    def passed(self, expect: float = 0.0) -> bool:
        """True once the time is spent, or once a unit expected to take ``expect`` seconds would end past it."""
        if self.minutes is None:
            return False
        elapsed, limit = time.monotonic() - self.t0, 60 * self.minutes
        if elapsed + expect < limit:
            return False
        if not self.told:
            why = ("reached" if elapsed >= limit else
                   f"would be passed by the next seed (~{expect / 60:.0f} min, as long as the last one)")
            print(f"--max-minutes {self.minutes:g} {why}: stopping here; rerun the same command to continue", flush=True)
            self.told = True
        return True

    def start_seed(self) -> bool:
        """Whether a seed may start (one as long as the last would end inside the limit); starts its clock."""
        self._seed_t0 = time.monotonic()
        return not self.passed(expect=self.last_seed)

    def end_seed(self) -> None:
        """The seed started by ``start_seed`` finished: its length is the next seed's estimate."""
        self.last_seed = time.monotonic() - self._seed_t0

    def check(self) -> None:
        """Raise ``TimeUp`` once the time is spent (for scripts whose rows sit deep in nested loops)."""
        if self.passed():
            raise TimeUp


def check_kept(where: Path | str, kept: dict, want: dict,
               hint: str = "delete it or keep this run elsewhere (--work-dir)") -> None:
    """Refuse to resume from something kept under another configuration: one line naming the first
    key that differs. A kept set or seed is named by its row, not by every option that made it, so
    without this a rerun with (say) another ``--dm-image-lr`` would silently reuse the old results."""
    diff = [k for k in sorted(set(kept) | set(want), key=str) if kept.get(k) != want.get(k)]
    if diff:
        k = diff[0]
        raise SystemExit(f"{where}: kept under {k}={kept.get(k)!r} but this run asks {k}={want.get(k)!r}; {hint}")


def as_stored(data):
    """``data`` as it reads back from a JSON file (tuples -> lists, numbers -> float): compare like with like."""
    return json.loads(json.dumps(data, default=float, sort_keys=True))


def paired_seeds(work: Path, seeds: int, run_seed, deadline: "Deadline | None" = None,
                 config: dict | None = None) -> list[dict] | None:
    """Seeds 0..seeds-1 of one row, each kept in ``work/seed<s>.json`` as it finishes so a rerun
    resumes. ``run_seed(s)`` returns the seed's record (it must re-synthesise or redraw the set AND
    train the student for seed s). Returns every record, or None when the deadline stopped the row.
    ``config`` (JSON-able: what makes a seed's result) is kept in ``work/config.json``; a resume under
    another config stops with a one-line error instead of mixing seeds. A folder kept before
    config.json existed is adopted as it is."""
    work.mkdir(parents=True, exist_ok=True)
    if config is not None:
        config = as_stored(config)
        kept = work / "config.json"
        if kept.exists():
            check_kept(work, json.loads(kept.read_text()), config)
        else:
            atomic_write_text(kept, json.dumps(config, sort_keys=True))
    out = []
    for s in range(seeds):
        done = work / f"seed{s}.json"
        if done.exists():
            out.append(json.loads(done.read_text()))
            continue
        if deadline is not None and not deadline.start_seed():
            return None
        rec = {"seed": s, **run_seed(s)}
        if deadline is not None:
            deadline.end_seed()
        atomic_write_text(done, json.dumps(rec, default=float))
        out.append(rec)
    return out


CLAIM_SEEDS = 5  # a gap carries a claim only on this many paired seeds per row; fewer make it an observation


def two_pooled_std(a: dict, b: dict) -> float:
    """The brief's noise bar between two rows: twice the pooled standard deviation of their seeds."""
    return 2 * math.sqrt((a["accuracy_std"] ** 2 + b["accuracy_std"] ** 2) / 2)


def paired_wins(a: dict, b: dict) -> str:
    """', higher on k of n paired seeds' when both rows kept per-seed accuracies in seed order."""
    xa, xb = a.get("accuracies"), b.get("accuracies")
    if not xa or not xb or len(xa) != len(xb) or len(xa) < 2:
        return ""
    return f", {a['method']} higher on {sum(x > y for x, y in zip(xa, xb))} of {len(xa)} paired seeds"


def claim_line(text: str, a: dict, b: dict, kind: str = "beats") -> str:
    """One claim answered by two rows. kind: ``beats`` (a above b by more than two pooled std),
    ``matches`` (a not below b by more than two pooled std) or ``differs`` (which of the two is
    higher, if either). Fewer than CLAIM_SEEDS seeds on a row leave the claim undecided."""
    if min(a["seeds"], b["seeds"]) < CLAIM_SEEDS:
        return (f"claim: {text}: undecided ({a['method']} {a['seeds']} seeds, {b['method']} {b['seeds']}; a claim "
                f"needs {CLAIM_SEEDS} paired seeds on both rows)")
    d, bar = a["accuracy_mean"] - b["accuracy_mean"], two_pooled_std(a, b)
    if kind == "beats":
        verdict = "holds" if d > bar else "does not hold"
    elif kind == "matches":
        verdict = "holds" if d >= -bar else "does not hold"
    elif kind == "differs":
        verdict = "no gap" if abs(d) <= bar else f"{a['method'] if d > 0 else b['method']} is higher"
    else:
        raise ValueError(f"claim kind {kind!r}: expected beats, matches or differs")
    return (f"claim: {text}: **{verdict}** ({a['method']} {a['accuracy_mean']:.2f} ± {a['accuracy_std']:.2f} vs "
            f"{b['method']} {b['accuracy_mean']:.2f} ± {b['accuracy_std']:.2f}; gap {d:+.2f}, 2 pooled std {bar:.2f}"
            f"{paired_wins(a, b)})")


def mean_std(values: list[float]) -> tuple[float, float]:
    import statistics

    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def begin(args) -> tuple[str, "Deadline"]:
    """A benchmark's start: logging on, the command that reproduces it printed, its --max-minutes clock."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cmd = command_line()
    print(f"reproduce with: {cmd}", flush=True)
    return cmd, Deadline(getattr(args, "max_minutes", None))


def add_max_minutes(parser) -> None:
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop cleanly after the row or seed in progress once this many minutes have passed, "
                             "or before a seed that would end past them (as long as the last seed this run "
                             "finished); rerunning the same command continues")


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_throughput(model, shape, batch: int = 100, device="cpu", amp: bool = False, channels_last: bool = True,
                    iters: int | None = None) -> float:
    """Images/s of the bare forward + CE + backward to the input pixels (the floor of any
    pixel-optimisation loop) on ``batch`` random inputs of ``shape``, after 3 warm-up steps."""
    device = torch.device(device)
    iters = iters or (20 if device.type == "cuda" else 5)  # a CPU step at 128 px takes seconds
    x = torch.rand(batch, *shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = torch.randint(0, 10, (batch,), device=device)
    for i in range(iters + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        x.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
    sync(device)
    return batch * iters / (time.perf_counter() - t0)

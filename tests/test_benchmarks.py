"""The benchmark scripts run end to end on tiny settings (they are not unit-tested otherwise, and an
API change once broke the beam part silently): rows format, resume, plots. Results and work folders
go to a temp dir (TINYSET_BENCH_RESULTS / TINYSET_BENCH_WORK), never into benchmarks/results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
ROW_KEYS = {"dataset", "method", "ipc", "bits", "student", "seeds", "accuracy_mean", "accuracy_std", "synthesis_seconds"}


def _run(script: str, args: list[str], tmp: Path, timeout: int = 300, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINYSET_BENCH_RESULTS": str(tmp / "results"), "TINYSET_BENCH_WORK": str(tmp / "work"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, env=env, capture_output=True, check=False,
                          text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rows(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    assert {"benchmark", "commit", "machine", "rows"} <= set(data)
    for r in data["rows"]:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
    return data["rows"]


@pytest.mark.slow
def test_decoupled_benchmark_runs_resumes_and_plots_the_crop_memory(tmp_path):
    args = ["--dataset", "digits", "--teacher", "convnet:depth=2,width=16", "--teacher-epochs", "1", "--epochs", "1",
            "--seeds", "2", "--iterations", "4", "--ipc", "1", "--rows", "random", "e2d", "--cache", str(tmp_path / "cache")]
    first = _run("decoupled.py", args, tmp_path)
    assert "e2d ipc 1 seed 1:" in first.stderr  # each seed logs its accuracy once it is evaluated
    rows = {r["method"]: r for r in _rows(tmp_path / "results" / "decoupled_digits.json")}
    assert set(rows) == {"random", "e2d"}
    # the package code a row ran with is recorded beside the scripts' commit (here both are this checkout)
    assert all(r["src_commit"] == r["row_commit"] != "" for r in rows.values())
    e2d = rows["e2d"]
    assert e2d["seeds"] == 2 and len(e2d["accuracies"]) == 2 and e2d["synthesis_seeds"] == [0, 1]
    assert e2d["iterations_run"] <= 4 and 0 <= e2d["iterations_saved_pct"] <= 100
    assert 1 <= len(e2d["memory_occupancy"]) <= 4  # crops held after each step, mean over seeds
    assert (tmp_path / "results" / "decoupled_digits_memory_ipc1.png").stat().st_size > 1000
    md = (tmp_path / "results" / "decoupled_digits.md").read_text()
    assert "| e2d | 1 | rded (epochs=1) | 2 |" in md and "python " in md
    assert "claim: E2D beats the random real subset: undecided (e2d 2 seeds" in md  # findings under the table
    assert e2d["protocol"] == "rded (epochs=1)" and e2d["eval_config"]["temperature"] == 20.0
    # a rerun resumes: finished rows are skipped, nothing is recomputed
    before = sorted(p.name for p in (tmp_path / "work").iterdir())
    again = _run("decoupled.py", args, tmp_path)
    assert "ipc 1 seed" not in again.stderr  # no seed was evaluated again
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == before


def test_max_minutes_stops_cleanly_and_a_rerun_continues(tmp_path):
    args = ["--dataset", "digits", "--teacher", "convnet:depth=1,width=8", "--teacher-epochs", "1", "--epochs", "1",
            "--seeds", "2", "--ipc", "1", "--rows", "random", "--cache", str(tmp_path / "cache")]
    stopped = _run("decoupled.py", [*args, "--max-minutes", "0"], tmp_path)
    assert "--max-minutes 0 reached: stopping here" in stopped.stdout
    assert "no row finished yet: nothing written" in stopped.stdout
    results = tmp_path / "results" / "decoupled_digits.json"
    assert not results.exists() or _rows(results) == []
    _run("decoupled.py", args, tmp_path)
    (row,) = _rows(tmp_path / "results" / "decoupled_digits.json")
    assert row["method"] == "random" and row["seeds"] == 2


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_benchmark_takes_max_minutes(script):
    """Every script that writes results rows takes --max-minutes (the shared helpers and tools do not)."""
    text = (BENCH / script).read_text()
    if "Rows(" in text and script != "common.py":
        assert "add_max_minutes(" in text


@pytest.mark.slow
def test_quadd_beam_benchmark_runs(tmp_path):
    _run("quadd.py", ["--part", "beam", "--seeds", "1", "--dm-iterations", "2", "--beam-ipc", "2", "--beam-bits", "2"], tmp_path)
    rows = _rows(tmp_path / "results" / "quadd_beam.json")
    methods = {(r["method"], r["bits"]) for r in rows}
    assert {("full", 32), ("fp32", 32), ("quadd", 2), ("posthoc", 2), ("random", 2)} <= methods
    assert all(r["bytes"] > 0 and r["compression"] > 0 for r in rows)
    assert ("3gpp", 7) in methods and all(r["student_bytes"] == r["set_bytes"] == r["bytes"] for r in rows)
    assert {r["space"] for r in rows if r["method"] == "quadd"} == {"normalized"}
    assert (tmp_path / "results" / "quadd_beam.png").exists()


@pytest.mark.slow
def test_quadd_cifar_part_runs_on_a_smoke_dataset(tmp_path):
    """The CIFAR part's logic (paired seeds, both label modes, budgets, set/student bytes) on digits."""
    args = ["--part", "cifar", "--smoke", "--dataset", "digits", "--bases", "dm", "--student", "convnet:depth=1,width=8",
            "--b-student", "convnet:depth=1,width=8"]
    _run("quadd.py", args, tmp_path)
    rows = {r["row_id"]: r for r in _rows(tmp_path / "results" / "quadd_digits_smoke.json")}
    assert {"A-random-fp32", "A-random-apot3", "A-fp32-dm", "A-posthoc-dm-uniform2", "A-quadd-dm-uniform2", "A-quaddfrozen-dm-uniform2",
            "B-hard-fp32-random", "B-hard-quadd-dm-uniform2", "B-stored-fp32-dm", "B-stored-quadd-dm-uniform2"} <= set(rows)
    t = rows["A-fp32-dm"]["teacher_bytes"]
    one, per_image = rows["A-random-uniform2"], rows["A-random-uniform2-imageclip"]  # the same images, finer clips
    assert per_image["method"] == "random_imageclip" and per_image["set_bytes"] > one["set_bytes"]
    assert "with a clip per image: vs one clip per set" in (tmp_path / "results" / "quadd_digits_smoke.md").read_text()
    for r in rows.values():
        assert r["protocol"].startswith("rded") and r["synthesis_seeds"] == [0]
        extra = r["student_bytes"] - r["set_bytes"]
        assert extra == {"teacher": t, "hard": 0}.get(r["label_mode"], extra) and (r["label_mode"] != "stored" or extra > 0)
    for mode in ("hard", "stored"):  # every budgeted point fits the fp32 reference's student_bytes in its mode
        ref = rows[f"B-{mode}-fp32-dm"]["student_bytes"]
        assert all(r["student_bytes"] <= ref for r in rows.values() if r["part"] == "B" and r["label_mode"] == mode)
    assert rows["B-hard-quadd-dm-uniform2"]["ipc"] > rows["B-stored-quadd-dm-uniform2"]["ipc"] >= 1
    assert (tmp_path / "results" / "quadd_digits_smoke_budget.png").exists()  # part B's own picture
    for mode in ("hard", "stored"):  # the blind pick: tinyset budget's held-out search on the same budget
        found = json.loads((tmp_path / "results" / f"quadd_digits_smoke_search_{mode}.json").read_text())
        assert found["search"]["label_mode"] == mode and found["options"]["budget"] == rows[f"B-{mode}-fp32-dm"]["student_bytes"]
        assert "test split is never read" in found["search"]["proxy"]["split"]
    assert "held-out search" in (tmp_path / "results" / "quadd_digits_smoke.md").read_text()
    again = _run("quadd.py", args, tmp_path)  # finished rows and seeds are kept: nothing is trained again
    assert "seed 0:" not in again.stderr


def test_quadd_only_runs_the_matching_rows_and_names_a_pattern_that_matches_none(tmp_path):
    """--only lets the rows that carry a claim run first; a typo is a one-line error listing the ids, given
    before any row runs (a typo beside a good pattern must not cost the good rows' hours first)."""
    base = ["--part", "cifar", "--smoke", "--dataset", "digits", "--bases", "dm", "--sections", "A",
            "--student", "convnet:depth=1,width=8"]
    _run("quadd.py", [*base, "--only", "A-random-*"], tmp_path)
    ids = {r["row_id"] for r in _rows(tmp_path / "results" / "quadd_digits_smoke.json")}
    assert ids == {"A-random-fp32", "A-random-apot3", "A-random-uniform2", "A-random-uniform2-imageclip"}
    proc = _run("quadd.py", [*base, "--only", "A-fp32-*", "A-qaudd-*"], tmp_path, ok=False)
    assert proc.returncode != 0
    assert "--only: no row id matches 'A-qaudd-*'" in proc.stderr and "A-quadd-dm-uniform2" in proc.stderr
    assert "A-fp32-dm" not in {r["row_id"] for r in _rows(tmp_path / "results" / "quadd_digits_smoke.json")}
    assert "imageclip" not in proc.stderr.replace("A-random-uniform2-imageclip", "")  # part B's: with E2D only
    proc = _run("quadd.py", [*base, "--sections", "B", "--bases", "e2d", "--only", "nomatch"], tmp_path, ok=False)
    assert "B-hard-random-uniform2-imageclip" in proc.stderr and "B-stored-random-uniform2-imageclip" in proc.stderr


def test_a_table_filled_by_several_runs_lists_every_rows_command(tmp_path, monkeypatch):
    """Rows written by different partial runs (--rows, --only) keep their own command; the table's
    'Reproduce with' lists each once, in row order, and a row rewritten later takes its new command."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    row = dict.fromkeys(ROW_KEYS, 1) | {"accuracy_mean": 50.0, "accuracy_std": 1.0}
    common.Rows("t", "T", "python b.py --rows a").add({**row, "method": "a"})
    common.Rows("t", "T", "python b.py --rows b").add({**row, "method": "b"})
    rows = common.Rows("t", "T", "python b.py --rows a --seeds 5")
    assert [r["command"] for r in rows.data["rows"]] == ["python b.py --rows a", "python b.py --rows b"]
    rows.add({**row, "method": "a"})
    md = (tmp_path / "t.md").read_text()
    assert "the rows' commands, in order" in md
    assert md.index("python b.py --rows b\n") < md.index("python b.py --rows a --seeds 5\n")
    assert "python b.py --rows a\n" not in md


def test_quadd_reruns_rows_that_predate_the_byte_accounting(tmp_path, monkeypatch):
    """A results file from before set/student bytes existed must not make a rerun skip its rows."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common
    import quadd

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    old = {"dataset": "beam", "row_id": "full-fp32", "bytes": 10}
    new = {"dataset": "beam", "row_id": "full-uint8", "set_bytes": 5, "student_bytes": 5}
    (tmp_path / "quadd_beam.json").write_text(json.dumps({"command": "python b.py", "rows": [old, new]}))
    rows = quadd.QuaddRows("quadd_beam", "T", "python b.py")
    assert not rows.has(row_id="full-fp32") and rows.has(row_id="full-uint8")


def test_every_decoupled_row_names_a_method_and_options_it_has(monkeypatch):
    """A row added to ROWS (rded_untiled, e2d_reference, ...) must not fail hours into a run on a typo."""
    monkeypatch.syspath_prepend(str(BENCH))
    import decoupled

    from tinyset.config import apply_mapping
    from tinyset.methods.base import METHODS

    for name, (method, margs) in decoupled.ROWS.items():
        cfg = METHODS.get(method).Config()
        apply_mapping(cfg, margs, prefix="method_args.")  # raises on an unknown option or a bad value
        for key, value in margs.items():
            assert getattr(cfg, key) == value, (name, key)
    for prof in decoupled.PROFILES.values():
        assert set(prof.rows) <= set(decoupled.ROWS)


def test_decoupled_student_other_than_the_teacher_is_recorded_and_kept_apart(tmp_path):
    args = ["--dataset", "digits", "--teacher", "convnet:depth=1,width=8", "--teacher-epochs", "1", "--epochs", "1",
            "--seeds", "1", "--ipc", "1", "--rows", "random", "--cache", str(tmp_path / "cache")]
    _run("decoupled.py", args, tmp_path)
    _run("decoupled.py", [*args, "--student", "convnet:depth=1,width=4"], tmp_path)
    rows = _rows(tmp_path / "results" / "decoupled_digits.json")
    assert sorted(r["student"] for r in rows) == ["convnet:depth=1,width=4", "convnet:depth=1,width=8"]
    assert len(list((tmp_path / "work").glob("digits-*-random-ipc1-seed0"))) == 2  # one set folder per student
    assert "convnet:depth=1,width=8 teacher, convnet:depth=1,width=4 student" in (tmp_path / "results" / "decoupled_digits.md").read_text()


def test_progress_lists_rows_and_the_seeds_of_rows_in_progress(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import progress

    res, work = tmp_path / "results", tmp_path / "work"
    res.mkdir()
    row = {"dataset": "cifar10", "method": "e2d", "ipc": 10, "seeds": 5, "accuracy_mean": 56.5, "accuracy_std": 0.6}
    (res / "decoupled_cifar10.json").write_text(json.dumps({"rows": [row]}))
    (res / "ssdd_smoke.json").write_text(json.dumps({"rows": [{**row, "method": "ssdd"}]}))
    for s in (0, 1):  # decoupled.py keeps a folder per seed; a seed still running has no record yet
        (work / f"cifar10-rded-sre2l-ipc10-seed{s}").mkdir(parents=True)
    (work / "cifar10-rded-sre2l-ipc10-seed0" / "bench_seed.json").write_text("{}")
    (work / "kd_cifar10-400-8-kd").mkdir()  # common.paired_seeds keeps a file per seed in the row's folder
    (work / "kd_cifar10-400-8-kd" / "seed3.json").write_text("{}")
    nested = work / "quadd-cifar-v2" / "seeds" / "A-fp32-dm"  # quadd.py keeps seeds two levels down
    nested.mkdir(parents=True)
    (nested / "seed0.json").write_text("{}")
    (nested / "config.json").write_text("{}")
    text = "\n".join(progress.report(res, work))
    assert "cifar10 e2d 10: 5 seeds, 56.50 ± 0.60" in text and "ssdd" not in text
    assert "quadd-cifar-v2/seeds/A-fp32-dm: 1 (0)" in text
    assert "cifar10-rded-sre2l-ipc10: 1 (0)" in text and "kd_cifar10-400-8-kd: 1 (3)" in text
    (res / "broken.json").write_text("{")
    with pytest.raises(SystemExit, match="broken.json: not readable"):
        progress.report(res, work)


def test_ssdd_claims_need_five_seeds_and_two_pooled_std(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import ssdd

    def row(method, mean, std, seeds=5):
        return {"method": method, "accuracy_mean": mean, "accuracy_std": std, "seeds": seeds}

    (text, a, b, kind) = next(c for c in ssdd.CLAIMS if c[3] == "beats")
    assert "**holds**" in ssdd.pooled_claims([row(a, 60.0, 1.0), row(b, 57.0, 1.0)])[0]
    assert "**does not hold**" in ssdd.pooled_claims([row(a, 60.0, 1.0), row(b, 58.5, 1.0)])[0]  # under 2 pooled std
    assert "undecided" in ssdd.pooled_claims([row(a, 60.0, 0.0, seeds=1), row(b, 50.0, 0.0, seeds=1)])[0]


def test_quadd_gap_wording_follows_the_two_pooled_std_rule_and_the_seed_count(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import quadd

    def r(mean, std, seeds=5):
        return {"accuracy_mean": mean, "accuracy_std": std, "seeds": seeds}

    assert quadd.gap(r(60, 1), r(56, 1)).startswith("above by +4.00")
    assert quadd.gap(r(60, 1), r(59, 1)).startswith("no gap")
    assert "an observation, a claim needs 5" in quadd.gap(r(60, 1, 3), r(56, 1, 3))


def test_quadd_budget_findings_need_both_bars_and_five_seeds(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    import quadd

    def r(row_id, method, base, ipc, bits, mean, std=0.5, seeds=5, mode="hard"):
        return {"row_id": row_id, "part": "B", "label_mode": mode, "method": method, "base": base, "quantizer": "uniform",
                "ipc": ipc, "bits": bits, "accuracy_mean": mean, "accuracy_std": std, "seeds": seeds,
                "student_bytes": 1000, "set_bytes": 1000}

    fp, q4, q2 = (r("B-hard-fp32-dm", "fp32", "dm", 10, 32, 30), r("B-hard-quadd-dm-uniform4", "quadd", "dm", 80, 4, 45),
                  r("B-hard-quadd-dm-uniform2", "quadd", "dm", 159, 2, 40))
    ur = r("B-hard-uint8-random", "uint8", "none", 40, 8, 44)
    text = "\n".join(quadd.cifar_findings([fp, q4, q2, ur]))
    assert "best of 2 points (80@4, 159@2; picked on test accuracy) 80@4 bits, 45.00" in text
    assert "vs the uint8 random real subset (40@8, 1000 B): no gap" in text and "**does not hold**" in text
    ur["accuracy_mean"] = 40
    assert "Claim (above both): **holds**" in "\n".join(quadd.cifar_findings([fp, q4, q2, ur]))
    assert "**undecided (no uint8 random row yet)**" in "\n".join(quadd.cifar_findings([fp, q4, q2]))
    q4["seeds"] = 3
    assert "undecided (under 5 seeds)" in "\n".join(quadd.cifar_findings([fp, q4, q2, ur]))
    rr = r("B-hard-random-uniform4", "random", "none", 80, 4, 44.9)
    assert "same width: dm 80@4 vs random 80@4: no gap (+0.10" in "\n".join(quadd.cifar_findings([fp, q4, q2, ur, rr]))
    # E2D keeps a clip per image: it is also set beside the random subset with the same clips (DM is not)
    e4 = r("B-hard-quadd-e2d-uniform4", "quadd", "e2d", 79, 4, 48)
    ri = r("B-hard-random-uniform4-imageclip", "random_imageclip", "none", 79, 4, 46.5)
    text = "\n".join(quadd.cifar_findings([fp, q4, e4, ur, rr, ri]))
    assert "e2d 79@4 vs random with a clip per image 79@4: above by +1.50" in text
    assert "dm 80@4 vs random with a clip per image" not in text
    ric = {**ri, "row_id": "A-random-uniform2-imageclip", "part": "A", "bits": 2, "ipc": 10}
    assert not [x for x in quadd.cifar_findings([ric]) if "clip per image" in x]  # alone: nothing to compare
    e2 = {**e4, "row_id": "A-quadd-e2d-uniform2", "part": "A", "bits": 2, "ipc": 10}
    assert "E2D quadd (a clip per image too) vs it: above by +1.50" in "\n".join(quadd.cifar_findings([ric, e2]))
    pt = {"ipc": 80, "bits": 4, "proxy_accuracy_mean": 33.3}
    pick = {"chosen": pt, "curve": [pt], "proxy": {"seeds": 3, "steps": 300, "student": "s", "holdout_samples": 1000}}
    text = "\n".join(quadd.cifar_findings([fp, q4, q2, ur], {"hard": pick}))
    assert "proxy % 80@4 33.3) picks 80@4; the rows at that width: quadd (dm) 80@4 45.00 ± 0.50" in text
    # E2D fits 79 per class at the picked width: it is among that width's rows; another width's rows are not
    text = "\n".join(quadd.cifar_findings([fp, q4, q2, e4, ur], {"hard": pick}))
    assert "the rows at that width: quadd (dm) 80@4 45.00 ± 0.50, quadd (e2d) 79@4 48.00" in text
    assert "159@2 4" not in text.split("picks 80@4")[1]
    # the grid: a line per width, a cell per (label mode, series) with its own images per class
    grid = quadd.part_b_grid([fp, q4, q2, e4, ur, rr, ri, r("B-stored-random-uniform4", "random", "none", 79, 4, 60,
                                                        mode="stored")])
    assert grid[3] == ("| bits | hard: random | hard: QuADD-DM | hard: QuADD-E2D | stored: random | stored: QuADD-DM "
                       "| stored: QuADD-E2D |")
    assert [g.split(" | ")[0] for g in grid[5:]] == ["| 32", "| 8", "| 4", "| 2"]
    assert grid[5] == "| 32 | not run | 30.00 ± 0.50 (10) | not run | not run | not run | not run |"
    assert grid[6] == "| 8 | not run | not run | not run | not run | not run | not run |"  # uint8 is a bar, not a series
    assert grid[7] == ("| 4 | 44.90 ± 0.50 (80) | 45.00 ± 0.50 (80) | 48.00 ± 0.50 (79) | 60.00 ± 0.50 (79) | not run "
                       "| not run |")
    assert quadd.part_b_grid([ric, e2]) == []  # part A only: no grid
    monkeypatch.setattr(quadd, "RESULTS", tmp_path)
    assert quadd.plot_budget([fp, q4, q2, ur], "b.png", "t") and (tmp_path / "b.png").stat().st_size > 0
    # a search's width with no row yet still gets its slot on the axis (the pick is drawn, not dropped)
    far = {**pick, "chosen": {"ipc": 120, "bits": 3, "proxy_accuracy_mean": 30.0}}
    assert quadd.plot_budget([fp, q4, q2, e4, ur], "c.png", "t", {"hard": far}) and (tmp_path / "c.png").exists()
    assert not quadd.plot_budget([{**fp, "part": "A"}], "a.png", "t")  # no part B rows: no picture


def test_claim_lines_follow_the_two_pooled_std_rule_and_count_paired_seeds(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    def row(method, accs):
        import statistics
        return {"method": method, "accuracies": accs, "seeds": len(accs), "accuracy_mean": statistics.fmean(accs),
                "accuracy_std": statistics.stdev(accs)}

    a, b = row("a", [60, 61, 59, 60, 62]), row("b", [55, 56, 57, 55, 56])
    assert "**holds**" in common.claim_line("a beats b", a, b) and "a higher on 5 of 5 paired seeds" in common.claim_line("x", a, b)
    assert "**does not hold**" in common.claim_line("b beats a", b, a)
    assert "**holds**" in common.claim_line("b matches a", row("b", [59, 60, 61, 60, 59]), a, "matches")
    assert "**a is higher**" in common.claim_line("which", a, b, "differs")
    assert "**no gap**" in common.claim_line("which", a, row("c", [61, 58, 60, 62, 59]), "differs")
    assert "undecided" in common.claim_line("few", row("a", [60, 61]), row("b", [50, 51]))
    with pytest.raises(ValueError, match="claim kind"):
        common.claim_line("bad", a, b, "wins")


def test_decoupled_findings_answer_each_claim_its_rows_can(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import decoupled

    def row(method, mean, std, secs=10.0, **extra):
        return {"method": method, "ipc": 10, "protocol": "rded", "student": "s", "seeds": 5, "accuracy_mean": mean,
                "accuracy_std": std, "synthesis_seconds": secs, **extra}

    rows = [row("e2d", 60, 1, secs=20, bn_stats_seconds=100, teacher_backward_images=1000, iterations_saved_pct=40.0),
            row("random", 59.5, 1), row("sre2l", 50, 1, secs=400, bn_stats_seconds=100, teacher_backward_images=20000),
            row("rded", 57, 1), row("e2d", 30, 1, secs=1)]  # another IPC's row must not mix in
    rows[-1]["ipc"] = 50
    text = "\n".join(decoupled.findings(rows))
    assert "IPC 10, claim: RDED beats the random real subset: **does not hold** (rded 57.00" in text
    assert "E2D beats RDED: **holds**" in text and "herding" not in text  # no herding row: no claim
    assert "IPC 10, claim: E2D beats the random real subset: **does not hold**" in text
    assert "E2D beats SRe2L: **holds**" in text
    assert "20.0x per seed" in text and "4.2x with each method's one-off statistics pass" in text
    assert "faster than SRe2L at equal or better accuracy: **holds**" in text
    assert "saves at least 30% of the iterations: **holds** (40.0% saved" in text
    slow = [dict(r, synthesis_seconds=100.0) if r["method"] == "sre2l" else r for r in rows]
    assert "faster than SRe2L at equal or better accuracy: **does not hold** (5.0x" in "\n".join(decoupled.findings(slow))


def test_a_render_only_rerun_keeps_the_speeds_its_rows_measured(tmp_path, monkeypatch):
    """`--max-minutes 0` re-renders a table: the notes keep the speeds its rows' run measured, not the
    speeds of a busy machine now (another benchmark on the cores halved them once)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import decoupled

    monkeypatch.setattr(decoupled, "RESULTS", tmp_path)
    calls = []

    def bare():
        calls.append("bare")
        return 41.0

    def loader():
        calls.append("loader")
        return {"decode_img_per_s": 1.0}

    # no table yet: measured, even when only rendering
    assert decoupled.measured_throughput("t", True, bare, loader)[:2] == (41.0, {"decode_img_per_s": 1.0})
    assert calls == ["bare", "loader"]
    kept = {"bare_img_per_s": 85.0, "loader": {"decode_img_per_s": 1608.0}}
    (tmp_path / "t.json").write_text(json.dumps({"rows": [], "measured": kept}))
    assert decoupled.measured_throughput("t", True, bare, loader) == (85.0, kept["loader"], kept)
    assert calls == ["bare", "loader"]  # nothing measured again
    # a run that adds rows measures afresh (its rows' throughput ratios use it)
    assert decoupled.measured_throughput("t", False, bare, loader)[0] == 41.0 and len(calls) == 4


def test_max_minutes_does_not_start_a_seed_the_last_seed_says_cannot_finish(tmp_path, monkeypatch, capsys):
    """A seed as long as the last one that would end past --max-minutes is not started (it is left for
    the rerun); without a seed measured in this run, the old rule holds: start until the time is spent."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    clock = [0.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: clock[0])
    deadline = common.Deadline(30)  # minutes

    def run_seed(s):
        clock[0] += 12 * 60  # every seed takes 12 min
        return {"accuracy": float(s)}

    # seeds 0 and 1 end at 24 min; a third would end at 36 > 30: the row stops with two seeds kept
    assert common.paired_seeds(tmp_path / "row", 5, run_seed, deadline) is None
    assert sorted(p.name for p in (tmp_path / "row").iterdir()) == ["seed0.json", "seed1.json"]
    assert "would be passed by the next seed (~12 min" in capsys.readouterr().out
    assert deadline.last_seed == 12 * 60
    fresh = common.Deadline(30)  # a rerun: nothing measured yet, the first seed starts at minute 0
    assert not fresh.passed(expect=fresh.last_seed)
    clock[0] += 30 * 60
    assert fresh.passed() and common.Deadline(None).passed(expect=1e9) is False


@pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0, reason="needs git")
def test_commit_is_dirty_for_a_changed_source_file_but_not_for_a_rewritten_result(tmp_path, monkeypatch):
    """A run rewrites its own table under benchmarks/results/ and the manual's copy of it: neither
    alone may mark the commit +dirty."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "b.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "t.md").write_text("old\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    where = tmp_path / "benchmarks"
    assert not common.commit(where).endswith("+dirty")
    (tmp_path / "benchmarks" / "results" / "t.md").write_text("new\n")
    (tmp_path / "docs" / "benchmarks.md").write_text("new\n")
    assert not common.commit(where).endswith("+dirty")
    (tmp_path / "benchmarks" / "b.py").write_text("x = 2\n")
    assert common.commit(where).endswith("+dirty")


def test_paired_seeds_refuse_to_resume_under_another_config(tmp_path, monkeypatch):
    """Kept seeds are named by their row only; the config that made them is kept beside them, and a
    rerun under another one is a one-line error naming the key (never a silent mix of seeds)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    calls = []

    def run_seed(s):
        calls.append(s)
        return {"accuracy": float(s)}

    cfg = {"set_args": {"lr": 0.001}, "eval": {"epochs": 300}}
    assert [r["accuracy"] for r in common.paired_seeds(tmp_path / "row", 2, run_seed, config=cfg)] == [0.0, 1.0]
    assert common.paired_seeds(tmp_path / "row", 3, run_seed, config=dict(cfg)) is not None and calls == [0, 1, 2]
    with pytest.raises(SystemExit, match=r"row: kept under set_args=\{'lr': 0.001\} but this run asks "
                                         r"set_args=\{'lr': 0.01\}; delete it"):
        common.paired_seeds(tmp_path / "row", 3, run_seed, config={**cfg, "set_args": {"lr": 0.01}})
    assert calls == [0, 1, 2]
    (tmp_path / "legacy").mkdir()  # a folder kept before config.json existed is adopted, then guarded
    (tmp_path / "legacy" / "seed0.json").write_text(json.dumps({"seed": 0, "accuracy": 5.0}))
    assert common.paired_seeds(tmp_path / "legacy", 1, run_seed, config=cfg)[0]["accuracy"] == 5.0
    with pytest.raises(SystemExit, match="legacy: kept under eval="):
        common.paired_seeds(tmp_path / "legacy", 1, run_seed, config={**cfg, "eval": {"epochs": 100}})


@pytest.mark.slow
def test_quadd_refuses_rows_seeds_and_sets_made_under_another_dm_step_size(tmp_path):
    """A table row, a row's kept seeds and a cached set are each named by the row or set alone; a rerun
    with another --dm-image-lr must stop at each with one line, and run once the old one is gone."""
    base = ["--part", "cifar", "--smoke", "--dataset", "digits", "--bases", "dm", "--sections", "A",
            "--student", "convnet:depth=1,width=8", "--only", "A-fp32-dm"]
    _run("quadd.py", base, tmp_path)
    other = [*base, "--dm-image-lr", "0.5"]
    proc = _run("quadd.py", other, tmp_path, ok=False)
    assert proc.returncode != 0
    assert "quadd_digits_smoke.json row A-fp32-dm: kept under set_args=" in proc.stderr
    assert "'lr': 0.5" in proc.stderr and "TINYSET_BENCH_RESULTS" in proc.stderr
    (tmp_path / "results" / "quadd_digits_smoke.json").unlink()
    proc = _run("quadd.py", other, tmp_path, ok=False)
    assert "seeds/A-fp32-dm: kept under set_args=" in proc.stderr and "--work-dir" in proc.stderr
    work = tmp_path / "work" / "quadd-digits-smoke"
    for f in (work / "seeds" / "A-fp32-dm").iterdir():
        f.unlink()
    proc = _run("quadd.py", other, tmp_path, ok=False)
    assert "dm-fp32-ipc1-s0: kept under method_args=" in proc.stderr
    assert _run("quadd.py", [*other, "--work-dir", str(tmp_path / "variant")], tmp_path).returncode == 0
    row = _rows(tmp_path / "results" / "quadd_digits_smoke.json")[0]
    assert row["set_args"]["lr"] == 0.5 and (tmp_path / "variant" / "dm-fp32-ipc1-s0").is_dir()


def test_quadd_three_bit_line_says_closeness_and_noise_separately(monkeypatch):
    """The paper's 3-bit claim is closeness to fp32 (within 1 point): the line gives the mean gap against
    that bar, the paired seeds, and the two-pooled-std verdict, which can disagree."""
    monkeypatch.syspath_prepend(str(BENCH))
    import quadd

    def r(row_id, method, accs):
        m = sum(accs) / len(accs)
        sd = (sum((x - m) ** 2 for x in accs) / (len(accs) - 1)) ** 0.5
        return {"row_id": row_id, "method": method, "part": "A", "accuracies": accs, "accuracy_mean": m,
                "accuracy_std": sd, "seeds": len(accs)}

    fp = r("A-fp32-dm", "fp32", [54.7, 57.1, 58.1, 57.5, 54.4])
    low = r("A-quadd-dm-uniform3", "quadd", [51.1, 55.3, 57.4, 54.2, 53.3])
    line = next(x for x in quadd.cifar_findings([fp, low]) if "3-bit" in x)
    assert "-2.10 points, not within the paper's 1 point, quadd higher on 0 of 5 paired seeds" in line
    assert "rule: no gap (-2.10, 2 pooled std = 4.08)" in line
    q2, p2 = r("A-quadd-dm-uniform2", "quadd", [50.0, 52.0, 51.0, 53.0, 52.0]), r("A-posthoc-dm-uniform2", "posthoc",
                                                                             [45.0, 47.0, 46.0, 48.0, 49.0])
    assert any(x.endswith("2-bit QuADD vs post-hoc: above by +4.60 (> 2 pooled std = 2.76), quadd higher on 5 of 5 "
                          "paired seeds.") for x in quadd.cifar_findings([fp, q2, p2]))
    close = r("A-quadd-dm-uniform3", "quadd", [54.0, 57.0, 58.0, 57.0, 55.0])
    assert "points, within the paper's 1 point" in next(x for x in quadd.cifar_findings([fp, close]) if "3-bit" in x)


def test_a_row_written_to_the_committed_results_refreshes_the_manual(tmp_path, monkeypatch):
    """A rerun once left docs/benchmarks.md quoting an older table and turned CI red: now every table
    written where the manual reads refreshes the manual's block itself, and only that block."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common
    import update_readme

    results, manual = tmp_path / "results", tmp_path / "benchmarks.md"
    results.mkdir()
    manual.write_text(f"intro\n{update_readme.START}\nold table\n{update_readme.END}\noutro\n")
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.setattr(common, "MANUALS", {results.resolve(): manual})
    row = dict.fromkeys(ROW_KEYS, 1) | {"accuracy_mean": 50.0, "accuracy_std": 1.0, "method": "a"}
    common.Rows("t", "Table T", "python b.py").add(row)
    common.Rows("t_smoke", "Smoke", "python b.py --smoke").add(row)
    text = manual.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    assert "### Table T" in text and "50.00 ± 1.00" in text and "Smoke" not in text
    assert not list(tmp_path.glob(".*.tmp"))

    # a manual without its markers is a warning naming the fix; the row itself is kept
    manual.write_text("no markers\n")
    common.Rows("t", "Table T", "python b.py").add({**row, "method": "b"})
    assert manual.read_text() == "no markers\n"
    assert {r["method"] for r in _rows(results / "t.json")} == {"a", "b"}
    with pytest.raises(ValueError, match="no <!-- benchmark tables: start -->"):
        update_readme.refresh(results, manual)


def test_benchmarks_with_results_elsewhere_leave_the_manual_alone(tmp_path, monkeypatch):
    """Tests and private runs (TINYSET_BENCH_RESULTS) write their tables elsewhere and must never
    rewrite docs/benchmarks.md with them (a first version of the refresh did)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    manual = ROOT / "docs" / "benchmarks.md"
    before = manual.read_bytes()
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    row = dict.fromkeys(ROW_KEYS, 1) | {"accuracy_mean": 50.0, "accuracy_std": 1.0, "method": "a"}
    common.Rows("t", "Table T", "python b.py").add(row)
    assert (tmp_path / "t.md").exists() and manual.read_bytes() == before

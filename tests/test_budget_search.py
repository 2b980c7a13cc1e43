"""`tinyset budget` as a search (issue 22, item 5): candidate (IPC, bits) points scored by a short
proxy student on a held-out split of the training set, never the test set; the best wins, the
curve is printed and saved; the fixed rule stays as the no-search option."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tinyset.cli import main
from tinyset.data.base import Split
from tinyset.errors import TinysetError
from tinyset.jobs.budget import (LabelCost, ProxyConfig, holdout_split, parse_points, point_bytes, search_budget,
                                 set_bytes)


class Forbidden(Split):
    """A test split that fails the moment anything reads it."""

    targets = None

    def __len__(self):
        raise AssertionError("the budget search touched the test split")

    def _load(self, indices):
        raise AssertionError("the budget search touched the test split")

    def get_batch(self, indices):
        raise AssertionError("the budget search touched the test split")


@pytest.fixture(scope="module")
def sealed(digits):
    return dataclasses.replace(digits, test=Forbidden())


def test_holdout_split_is_made_of_training_samples_only(digits):
    pds = holdout_split(digits, ProxyConfig(holdout=0.1))
    pool, held = pds.train.indices, pds.test.indices
    assert len(set(pool.tolist()) & set(held.tolist())) == 0  # disjoint
    assert len(pool) + len(held) == len(digits.train)  # both from the training split, nothing else
    assert pds.train.base is digits.train and pds.test.base is digits.train
    counts = torch.bincount(pds.test.targets, minlength=10)
    assert (counts >= 1).all()  # every class is scored


def test_search_never_touches_the_test_split_and_picks_the_best_proxy_point(sealed, digits):
    k = 10
    budget = set_bytes(20, 8, digits.info.shape, k, info=digits.info)
    proxy = ProxyConfig(steps=30, seeds=1, student="convnet:depth=2,width=16", calibrate_steps=5)
    res = search_budget(sealed, budget, points=[(1, 8), (20, 8), (None, 2)], proxy=proxy)
    names = [p.name for p in res.points]
    assert names[:2] == ["1@8", "20@8"] and names[2].endswith("@2")
    assert res.chosen is max(res.points, key=lambda p: p.mean)  # the best proxy score wins
    one, twenty = res.points[0], res.points[1]
    assert twenty.mean > one.mean  # 20 real digits per class beat 1 on the held-out split
    assert all(p.student_bytes <= budget for p in res.points)
    assert res.points[2].ipc > 20  # max@2: the most 2-bit samples per class that fit
    d = res.to_dict()
    assert d["rule"] == "search" and d["chosen"]["ipc"] == res.chosen.ipc and len(d["curve"]) == 3
    assert "never read" in d["proxy"]["split"] and d["proxy"]["holdout_samples"] > 0
    assert "<- chosen" in res.curve() and "(chosen)" in res.table()
    # a point over the budget is refused, not silently shrunk
    with pytest.raises(TinysetError, match="over the budget"):
        search_budget(sealed, budget, points=[(21, 8)], proxy=proxy)


def test_search_counts_the_label_modes_bytes(sealed, digits):
    stored = LabelCost("stored", 3, 4)
    budget = 6000
    res = search_budget(sealed, budget, candidates=(8, 4), proxy=ProxyConfig(steps=2, student="convnet:depth=1,width=4"),
                        labels=stored)
    for p in res.points:
        sb, lb, tot = point_bytes(p.ipc, p.bits, digits.info.shape, 10, labels=stored, info=digits.info)
        assert (p.set_bytes, p.label_bytes, p.student_bytes) == (sb, lb, tot) and lb > 0 and tot <= budget
        assert point_bytes(p.ipc + 1, p.bits, digits.info.shape, 10, labels=stored, info=digits.info)[2] > budget
    with pytest.raises(TinysetError, match="teacher"):
        LabelCost("teacher")


def test_parse_points():
    assert parse_points("10@32, 40@8,max@3") == [(10, 32), (40, 8), (None, 3)]
    for bad in ("10", "0@8", "x@3", ""):
        with pytest.raises(TinysetError):
            parse_points(bad)


def test_budget_cli_prints_and_saves_the_curve(tmp_path, capsys):
    out = tmp_path / "budget.json"
    assert main(["budget", "--budget", "8KB", "--points", "2@8,max@2", "--proxy-steps", "3", "--proxy-student",
                 "convnet:depth=1,width=4", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "proxy accuracy" in text and "chosen:" in text and "<- chosen" in text and "test split is never read" in text
    saved = json.loads(out.read_text())
    assert saved["rule"] == "search" and {p["ipc"] for p in saved["curve"]} >= {2} and saved["chosen"]["bits"] in (8, 2)
    # the fixed rule, no search
    assert main(["budget", "--budget", "8KB", "--rule", "fixed", "--quiet"]) == 0
    assert "fixed rule" in capsys.readouterr().out
    # distill --budget searches and saves the plan in the run
    run = tmp_path / "dm"
    assert main(["distill", "--method", "dm", "--budget", "3KB", "--budget-points", "max@4,max@2", "--proxy-steps", "2",
                 "--no-eval", "--out", str(run), "--quiet", "--set", "method_args.iterations=1",
                 "--set", "method_args.batch_real=4"]) == 0
    plan = json.loads((run / "budget.json").read_text())
    assert plan["rule"] == "search" and plan["set_bytes"] <= 3000 and len(plan["curve"]) == 2

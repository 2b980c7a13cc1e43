"""The main job end to end on digits, resume after an interruption, and the CLI's errors."""
import json

import pytest
import torch

from tinyset import cli
from tinyset.artifact import load_artifact
from tinyset.config import EvalConfig, RunConfig
from tinyset.errors import TinysetError
from tinyset.eval.protocol import evaluate_set
from tinyset.methods.e2d import E2D
from tinyset.jobs.distill import distill


def _cfg(teacher_cfg, method="e2d", ipc=2, epochs=5):
    cfg = RunConfig(method=method, ipc=ipc, device="cpu", teacher=teacher_cfg)
    cfg.method_args = {"iterations": 8, "batch_size": 20} if method == "e2d" else {}
    cfg.eval = EvalConfig(student="convnet:depth=2,width=16", epochs=epochs, seeds=2, batch_size=20)
    return cfg


def test_distill_writes_artifact_config_log_and_eval(tmp_path, small_teacher_cfg, digits_teacher):
    out = tmp_path / "run"
    distill(_cfg(small_teacher_cfg), out, progress=False)
    art = load_artifact(out)
    m = art.manifest
    assert art.images.shape == (20, 1, 16, 16) and m["ipc"] == 2 and m["method"] == "e2d"
    assert m["class_to_idx"]["7"] == 7 and m["teacher"]["sha256"] == digits_teacher.reference["sha256"]
    assert m["synthesis"]["teacher_backward_images"] == 8 * 20 and m["seed"] == 0
    assert m["method_config"]["iterations"] == 8 and m["versions"]["torch"] == torch.__version__
    for f in ("preview.png", "config.yaml", "log.jsonl", "eval.json", "eval.md"):
        assert (out / f).exists(), f
    report = json.loads((out / "eval.json").read_text())
    sets = {(r["label_mode"], r["set"]) for r in report["rows"]}
    assert sets == {("soft", "distilled"), ("soft", "random")} and "soft" in report["improvement_over_random"]
    assert not (tmp_path / ".run.partial").exists()
    with pytest.raises(TinysetError, match="already exists"):
        distill(_cfg(small_teacher_cfg), out, progress=False)


def test_interrupted_distill_resumes_to_the_same_set(tmp_path, small_teacher_cfg, digits_teacher, monkeypatch):
    cfg = _cfg(small_teacher_cfg)
    cfg.method_args = {"iterations": 4, "batch_size": 4}  # 3 units
    cfg.evaluate = False
    whole = tmp_path / "whole"
    distill(cfg, whole, progress=False)

    real = E2D.run_unit
    calls = {"n": 0}

    def dying(self, unit, g):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, unit, g)

    monkeypatch.setattr(E2D, "run_unit", dying)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        distill(cfg, out, progress=False)
    assert not out.exists() and len(list((tmp_path / ".resumed.partial").glob("unit_*.safetensors"))) == 1
    monkeypatch.setattr(E2D, "run_unit", real)
    distill(cfg, out, progress=False)
    a, b = load_artifact(whole), load_artifact(out)
    assert torch.equal(a.images, b.images)
    assert any(u.get("resumed") for u in b.manifest["synthesis"]["units"])


def test_soft_labels_beat_hard_labels_on_a_distilled_digits_set(digits, digits_teacher):
    """The property the whole decoupled evaluation rests on: at 1 image per class, a student taught
    online by the teacher's soft labels beats one taught by the same images' hard labels."""
    idx = torch.cat([digits.train.class_indices(c)[:1] for c in range(10)])
    x, y = digits.train.get_batch(idx)
    ecfg = EvalConfig(student="convnet:depth=2,width=32", epochs=100, lr=1e-2, seeds=2, batch_size=10,
                      label_modes=("soft", "hard"), random_baseline=False, crop_scale=(0.5, 1.0))
    rep = evaluate_set(x, y, digits, digits_teacher.model, ecfg, "cpu", progress=False)
    acc = {r["label_mode"]: r["accuracy_mean"] for r in rep["rows"]}
    assert acc["soft"] > acc["hard"] + 10.0, acc  # measured: ~79 vs ~57


def test_cli_end_to_end_and_errors(tmp_path, small_teacher_cfg, digits_teacher, capsys):
    out = tmp_path / "cli"
    sets = ["--set", f"teacher.cache_dir={small_teacher_cfg.cache_dir}", "--set", f"teacher.model={small_teacher_cfg.model}",
            "--set", "teacher.epochs=8", "--set", "teacher.batch_size=64", "--set", "eval.epochs=2",
            "--set", "eval.student=convnet:depth=2,width=8"]
    rc = cli.main(["distill", "--dataset", "digits", "--method", "random", "--ipc", "1", "--seeds", "1", "--out", str(out), "--quiet", *sets])
    text = capsys.readouterr().out
    assert rc == 0 and "| soft | distilled | 1 |" in text and "preview:" in text
    assert cli.main(["info", str(out)]) == 0 and "method random, ipc 1" in capsys.readouterr().out
    assert cli.main(["export", str(out), "--to", "imagefolder", str(tmp_path / "png")]) == 0
    assert len(list((tmp_path / "png").glob("*/*.png"))) == 10
    assert cli.main(["eval", str(out), "--seeds", "1", "--label-modes", "hard", "--quiet", "--set", "eval.random_baseline=false"]) == 0
    assert "| hard | distilled | 1 |" in capsys.readouterr().out
    capsys.readouterr()
    assert cli.main(["distill", "--dataset", "nope", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'nope'") and err.count("\n") == 1
    assert cli.main(["distill", "--method", "magic", "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path / "missing")]) == 2
    assert cli.main(["distill", "--set", "eval.epoch=3", "--quiet"]) == 2
    assert "unknown config key 'eval.epoch'" in capsys.readouterr().err
    for listing in ("datasets", "models", "methods", "kd-losses"):
        assert cli.main([listing]) == 0
    assert "e2d" in capsys.readouterr().out

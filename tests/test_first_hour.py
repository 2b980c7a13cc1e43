"""Issue 12, "the first hour": what a new user hits. One test (or more) per numbered item."""
from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tinyset
from tinyset import cli
from tinyset.config import ConfigError, EvalConfig, RunConfig, apply_mapping, parse_override
from tinyset.errors import TinysetError
from tinyset.models import get_model, load_model, save_model, save_model_safetensors
from tinyset.jobs.distill import distill, evaluate_run

ROOT = Path(__file__).resolve().parents[1]


def _teacher_sets(tcfg, cache=None):
    return ["--set", f"teacher.cache_dir={cache or tcfg.cache_dir}", "--set", f"teacher.model={tcfg.model}",
            "--set", f"teacher.epochs={tcfg.epochs}", "--set", f"teacher.batch_size={tcfg.batch_size}"]


def _tiny_cfg(tcfg, method="random", ipc=1, epochs=1, seeds=1, modes=("hard",)):
    cfg = RunConfig(method=method, ipc=ipc, device="cpu", teacher=tcfg)
    cfg.eval = EvalConfig(student="convnet:depth=1,width=8", epochs=epochs, seeds=seeds, batch_size=10,
                          label_modes=tuple(modes), random_baseline=False)
    return cfg


def _one_line_errors(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines and all(l.startswith("error: ") for l in lines), err
    return err


@pytest.fixture
def no_training(monkeypatch):
    """Any teacher training or student/teacher train() call fails the test: validation must come first."""
    import tinyset.eval.trainer as trainer_mod
    import tinyset.teachers.supervised as teacher_mod

    def boom(*a, **k):
        raise AssertionError("work started before validation")

    monkeypatch.setattr(teacher_mod, "train_teacher", boom)
    monkeypatch.setattr(teacher_mod, "train", boom)
    monkeypatch.setattr(trainer_mod, "train", boom)


# 1. kd resumes only its own run
def test_kd_refuses_a_folder_holding_a_different_run(tmp_path, small_teacher_cfg, digits_teacher, capsys):
    out = tmp_path / "kd"
    base = ["kd", "--dataset", "digits", "--student", "convnet:depth=1,width=8", "--epochs", "1", "--out", str(out),
            "--quiet", *_teacher_sets(small_teacher_cfg)]
    assert cli.main(base + ["--loss", "kd"]) == 0
    first = json.loads((out / "result.json").read_text())
    capsys.readouterr()
    assert cli.main(base + ["--loss", "dkd"]) == 2
    err = _one_line_errors(capsys)
    assert "holds a different kd run" in err and "loss kd" in err
    assert json.loads((out / "result.json").read_text()) == first  # untouched, never relabelled
    assert cli.main(base + ["--loss", "dkd", "--overwrite"]) == 0
    assert json.loads((out / "result.json").read_text())["loss"] == "dkd"


def test_kd_default_out_differs_per_loss():
    from tinyset.jobs.kd import default_out

    cfg = RunConfig()
    assert default_out(cfg, "convnet3", "kd", 3) != default_out(cfg, "convnet3", "dkd", 3)
    assert default_out(cfg, "convnet3", "kd", 3) != default_out(cfg, "convnet3", "kd", 30)


# 2. validation before any training
@pytest.mark.parametrize("extra, message", [
    (["--student", "nosuchnet"], "unknown student model 'nosuchnet'"),
    (["--label-modes", "sfot"], "label mode(s) 'sfot'"),
    (["--set", "eval.seeds=0"], "eval.seeds must be at least 1"),
    (["--teacher-model", "convnet:depht=3"], "teacher model"),
    (["--set", "method_args.iterations=many"], "method_args.iterations: expected an integer"),
    (["--set", "method_args.itertions=5"], "did you mean 'method_args.iterations'"),
])
def test_bad_names_and_ranges_fail_before_the_teacher_trains(tmp_path, capsys, no_training, extra, message):
    args = ["distill", "--dataset", "digits", "--method", "e2d", "--out", str(tmp_path / "run"), "--quiet",
            "--set", f"teacher.cache_dir={tmp_path / 'cache'}", *extra]
    assert cli.main(args) == 2
    assert message in _one_line_errors(capsys)
    assert list(tmp_path.iterdir()) == []  # nothing written: no out, no .partial, no cache folder


def test_every_problem_is_listed_at_once(no_training):
    from tinyset.jobs.validate import check_config

    cfg = RunConfig(method="e2e", ipc=0)
    cfg.eval.seeds = 0
    cfg.eval.label_modes = ("sfot",)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    text = str(e.value)
    assert len(e.value.problems) >= 4 and "did you mean 'e2d'" in text and "ipc must be at least 1" in text


# 3. one-line errors where there were tracebacks
@pytest.mark.parametrize("override, message", [
    ("ipc=2.5", "ipc: expected an integer"),
    ("eval.ema=abc", "eval.ema: expected float or null"),
    ("eval.crop_scale=0.5", "eval.crop_scale: expected 2 values"),
    ("eval.crop_scale=[0.9,0.1]", "0 < low <= high <= 1"),
])
def test_bad_values_are_one_line_errors(tmp_path, capsys, no_training, override, message):
    assert cli.main(["distill", "--out", str(tmp_path / "r"), "--quiet", "--set", override]) == 2
    assert message in _one_line_errors(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_one_line_error(tmp_path, capsys, no_training):
    assert cli.main(["distill", "--device", "cuda", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "no usable CUDA GPU" in _one_line_errors(capsys)


def test_three_channel_checkpoint_on_one_channel_data(tmp_path, digits):
    from dataclasses import replace

    rgb = replace(digits.info, shape=(3, 16, 16), mean=(0.5,) * 3, std=(0.2,) * 3, name="rgb")
    path = tmp_path / "rgb.pt"
    save_model(get_model("convnet:depth=1,width=8", rgb), path, "convnet:depth=1,width=8", rgb)
    with pytest.raises(TinysetError, match=r"inputs of shape \(3, 16, 16\).*digits has \(1, 16, 16\)"):
        load_model(path, digits.info)


def test_info_json_into_a_closed_pipe_is_quiet(tmp_path, small_teacher_cfg):
    from tinyset.jobs.distill import distill as run

    cfg = _tiny_cfg(small_teacher_cfg)
    cfg.evaluate = False
    run(cfg, tmp_path / "r", progress=False)
    code = "import sys; from tinyset import cli; sys.exit(cli.main(sys.argv[1:]))"
    p = subprocess.run(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} info --json {tmp_path / 'r'} | head -c 10",
                       shell=True, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


# 4. typed overrides
def test_overrides_are_coerced_from_type_hints():
    cfg = RunConfig()
    for o in ("eval.lr=1e-3", "eval.ema=0.99", "teacher.extra=[convnet2]", "eval.flip=false", "ipc=3",
              "eval.crop_scale=[0.08,1]", "eval.label_modes=soft,hard", "eval.he_da=null", "method_args.eps=0.3"):
        apply_mapping(cfg, parse_override(o))
    assert cfg.eval.lr == 1e-3 and isinstance(cfg.eval.lr, float) and cfg.eval.ema == 0.99
    assert cfg.teacher.extra == ("convnet2",) and cfg.eval.flip is False and cfg.ipc == 3
    assert cfg.eval.crop_scale == (0.08, 1.0) and all(isinstance(v, float) for v in cfg.eval.crop_scale)
    assert cfg.eval.label_modes == ("soft", "hard") and cfg.eval.he_da is None and cfg.method_args == {"eps": 0.3}
    with pytest.raises(ConfigError) as e:
        apply_mapping(cfg, {"ipc": "x", "eval": {"seeds": 1.5, "flip": "maybe"}})
    assert len(e.value.problems) == 3 and cfg.ipc == 3  # nothing applied when anything is bad


def test_method_args_are_checked_against_the_method_config():
    from tinyset.jobs.validate import check_config

    cfg = RunConfig(method="e2d", method_args={"eps": "high"})
    with pytest.raises(ConfigError, match="method_args.eps: expected a number"):
        check_config(cfg)
    check_config(RunConfig(method="e2d", method_args={"eps": "1e-1", "crop_scale": [0.5, 1]}))


# 5. litter
def test_failed_commands_leave_nothing_on_disk(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["distill", "--dataset", "nope", "--out", "runs/x", "--quiet"]) == 2
    assert cli.main(["kd", "--loss", "dkdd", "--out", "runs/kd", "--quiet"]) == 2
    assert "did you mean 'dkd'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_failure_before_the_first_unit_removes_the_partial_folder(tmp_path, small_teacher_cfg, digits_teacher, monkeypatch):
    from tinyset.methods.random_subset import RandomSubset

    def broken(self, unit, g):
        raise RuntimeError("method broke")

    monkeypatch.setattr(RandomSubset, "run_unit", broken)
    cfg = _tiny_cfg(small_teacher_cfg)
    with pytest.raises(RuntimeError):
        distill(cfg, tmp_path / "runs" / "x", progress=False)
    assert not (tmp_path / "runs").exists()


def test_failed_teacher_leaves_no_empty_cache_folder(tmp_path, digits, monkeypatch):
    import tinyset.teachers.supervised as teacher_mod
    from tinyset.config import TeacherConfig

    def broken(*a, **k):
        raise RuntimeError("teacher broke")

    monkeypatch.setattr(teacher_mod, "train", broken)
    tcfg = TeacherConfig(model="convnet:depth=1,width=8", epochs=1, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(RuntimeError):
        teacher_mod.get_teacher(digits, tcfg, "cpu", progress=False)
    assert not (tmp_path / "cache").exists()


# 6. a selection method asked for more images than a class has
@pytest.mark.parametrize("method", ["random", "herding", "rded"])
def test_selection_method_ipc_above_class_size_fails_at_once(tmp_path, capsys, no_training, method):
    assert cli.main(["distill", "--method", method, "--ipc", "1000", "--no-eval", "--out", str(tmp_path / "r"), "--quiet",
                     "--set", f"teacher.cache_dir={tmp_path / 'c'}"]) == 2
    assert re.search(r"class '\d' has only \d+ training images", _one_line_errors(capsys))
    assert list(tmp_path.iterdir()) == []


# 7. checkpoints never unpickle code unless asked
class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_pickled_checkpoint_is_refused_unless_trusted(tmp_path, digits):
    path = tmp_path / "whole.pt"
    torch.save(_Net(), path)
    with pytest.raises(TinysetError, match="needs pickle.*--trust-checkpoint"):
        load_model(path, digits.info)
    model, _ = load_model(path, digits.info, trust=True)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)


def test_tinyset_checkpoints_load_with_weights_only(tmp_path, digits, monkeypatch):
    real = torch.load
    seen = []

    def strict(*a, **k):
        seen.append(k.get("weights_only"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", strict)
    path = tmp_path / "t.pt"
    save_model(get_model("convnet:depth=1,width=8", digits.info), path, "convnet:depth=1,width=8", digits.info, {"test_accuracy": 50.0})
    load_model(path, digits.info)
    assert seen == [True]


def test_safetensors_teacher_is_accepted(tmp_path, digits, digits_teacher, small_teacher_cfg):
    from dataclasses import replace

    from tinyset.teachers.supervised import get_teacher

    path = tmp_path / "teacher.safetensors"
    save_model_safetensors(digits_teacher.model, path, small_teacher_cfg.model, digits.info, {"test_accuracy": 90.0})
    t = get_teacher(digits, replace(small_teacher_cfg, checkpoint=str(path)), "cpu", progress=False)
    x = digits.test.get_batch(torch.arange(8))[0]
    assert torch.allclose(t.model(x), digits_teacher.model(x), atol=1e-5)
    assert t.reference["test_accuracy"] == 90.0


# 8. progress
def test_progress_is_plain_log_lines_off_a_terminal(digits, monkeypatch, caplog, capsys):
    import tinyset.utils.progress as prog
    from tinyset.eval.trainer import TrainSpec, train
    from tinyset.kd import build_kd_loss

    monkeypatch.setattr(prog, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="tinyset.progress")
    spec = TrainSpec(epochs=2, batch_size=256, augment="none")
    train(get_model("convnet:depth=1,width=8", digits.info), digits.train, spec, build_kd_loss("ce"), desc="tiny", progress=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "tinyset.progress"]
    per_epoch = -(-len(digits.train) // 256)
    assert any(f"tiny: {per_epoch}/{2 * per_epoch}" in l and "ETA" in l for l in lines), lines  # in-epoch, not per epoch
    assert "\r" not in capsys.readouterr().err  # no tqdm frames in a log file


def test_untrained_teacher_is_announced_and_near_chance_warned(tmp_path, digits, caplog):
    from tinyset.config import TeacherConfig
    from tinyset.teachers.supervised import get_teacher

    caplog.set_level(logging.INFO, logger="tinyset")
    tcfg = TeacherConfig(model="convnet:depth=1,width=8", epochs=1, lr=1e-6, cache_dir=str(tmp_path))
    get_teacher(digits, tcfg, "cpu", progress=False)
    text = caplog.text
    assert "no cached teacher: training convnet:depth=1,width=8 on digits for 1 epochs" in text
    assert "near chance" in text


# 9 + 10. eval results keyed by protocol; log.jsonl with fields
def test_eval_keeps_one_result_per_protocol_and_logs_fields(tmp_path, small_teacher_cfg, digits_teacher):
    out = tmp_path / "r"
    cfg = _tiny_cfg(small_teacher_cfg)
    distill(cfg, out, progress=False)
    cfg2 = _tiny_cfg(small_teacher_cfg, epochs=2)
    cfg2.eval.ema = 0.9
    evaluate_run(out, cfg2, progress=False)
    data = json.loads((out / "eval.json").read_text())
    assert len(data["protocols"]) == 2 and data["config"]["epochs"] == 2
    md = (out / "eval.md").read_text()
    assert md.count("### ") == 2 and "1 epochs" in md and "2 epochs" in md and "EMA 0.9" in md and "EMA off" in md
    assert "(n=1)" in md and "± 0.00" not in md
    evaluate_run(out, cfg2, progress=False)  # the same protocol again replaces its own result
    assert len(json.loads((out / "eval.json").read_text())["protocols"]) == 2

    recs = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert all(re.fullmatch(r"[a-z_]+", r["event"]) for r in recs), {r["event"] for r in recs}
    epochs = [r for r in recs if r["event"] == "epoch" and r.get("stage") == "eval"]
    assert epochs and all({"seed", "label_mode", "set", "epoch", "loss"} <= set(r) for r in epochs)


# 11. CLI polish
def test_cli_polish(tmp_path, small_teacher_cfg, digits_teacher, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert tinyset.__version__ in capsys.readouterr().out
    assert cli.main(["methods", "-v", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "method_args.eps = 0.5" in out and "method_args.pool" in out
    assert cli.main(["methods", "e2e"]) == 2 and "did you mean 'e2d'" in capsys.readouterr().err
    assert cli.main(["distill", "--method", "e2d", "--print-config", "--out", str(tmp_path / "r")]) == 0
    assert "method: e2d" in capsys.readouterr().out and not (tmp_path / "r").exists()
    run = tmp_path / "run"
    assert cli.main(["distill", "--method", "random", "--ipc", "1", "--seeds", "1", "--label-modes", "hard", "--out", str(run),
                     "--quiet", "--student", "convnet:depth=1,width=8", "--set", "eval.epochs=1",
                     *_teacher_sets(small_teacher_cfg)]) == 0
    out = capsys.readouterr().out
    assert "(n=1)" in out and "wall time:" in out and "student convnet:depth=1,width=8, 1 epochs" in out
    assert cli.main(["info", str(run), "--quiet"]) == 0 and "checksums OK" in capsys.readouterr().out
    assert cli.main(["teacher", "--teacher-model", small_teacher_cfg.model, "--quiet", *_teacher_sets(small_teacher_cfg)]) == 0
    assert "teacher convnet:depth=3,width=32" in capsys.readouterr().out
    for sub in ("distill", "teacher", "eval", "kd", "export", "info"):
        text = cli.build_parser()._subparsers._group_actions[0].choices[sub].format_help()
        assert "example:" in text and "--quiet" in text, sub
    assert "(default: kd)" in cli.build_parser()._subparsers._group_actions[0].choices["kd"].format_help()


# 12. README and docs/ examples parse as pasted; globbable arguments are quoted
def _readme_commands() -> list[str]:
    cmds = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            joined = block.replace("\\\n", " ")
            cmds += [l.strip() for l in joined.splitlines() if l.strip().startswith("tinyset ")]
    return cmds


def test_readme_cli_examples_parse_and_quote_globs():
    cmds = _readme_commands()
    assert len(cmds) >= 8
    parser = cli.build_parser()
    for line in cmds:
        code = line.split("  #")[0]
        for word in code.split():
            if any(c in word for c in "[]*?"):
                assert word[0] in "'\"", f"unquoted glob in README: {line}"
        parser.parse_args(shlex.split(code)[1:])
        if "cifar10" in code or "imagefolder:" in code or "--epochs 30" in code:
            assert "#" in line, f"README example without its CPU cost: {line}"


# 13. the demo is sized for a few minutes on 2 cores and reports its wall time
def test_demo_preset_is_small_and_shows_hard_labels():
    from tinyset.config import build_config

    cfg = build_config(RunConfig, "digits-demo")
    students = len(cfg.eval.label_modes) * cfg.eval.seeds * 2
    assert "hard" in cfg.eval.label_modes and students * cfg.eval.epochs <= 600
    assert "width=32" in cfg.teacher.model and "width=32" in cfg.eval.student  # not the 128-wide ConvNet
    make = (ROOT / "Makefile").read_text()
    assert "digits-demo" in make and "--overwrite" in make


# 14. the short Python API
def test_short_python_api(tmp_path, small_teacher_cfg, digits_teacher):
    assert "e2d" in tinyset.list_methods()
    res = tinyset.distill("random", dataset="digits", ipc=2, out=tmp_path / "api", progress=False, evaluate=False,
                          teacher={"cache_dir": small_teacher_cfg.cache_dir, "model": small_teacher_cfg.model})
    art = tinyset.load(res.path)
    ds = art.as_dataset()
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 20
    x, y = ds[0]
    assert x.shape == (1, 16, 16) and int(y) == 0
    with pytest.raises(TinysetError, match="did you mean 'e2d'"):
        tinyset.distill("e2e", out=tmp_path / "bad")


# 15. library code where it is equivalent
def test_weight_ema_is_torch_averaged_model():
    from torch.optim.swa_utils import AveragedModel

    from tinyset.eval.trainer import make_ema

    net = torch.nn.Linear(3, 2)
    ema = make_ema(net, 0.9)
    assert isinstance(ema, AveragedModel)
    w0 = net.weight.detach().clone()
    ema.update_parameters(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update_parameters(net)
    assert torch.allclose(ema.module.weight, 0.9 * w0 + 0.1 * (w0 + 1.0))

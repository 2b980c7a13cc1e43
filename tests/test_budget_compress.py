"""Budget mode never exceeds its budget; post-hoc compression and the CLI around both."""
import json

import pytest
import torch

from tinyset.artifact import load_artifact
from tinyset.jobs.budget import parse_budget, plan_budget, set_bytes
from tinyset.cli import main
from tinyset.jobs.compress import CompressConfig, compress_artifact
from tinyset.errors import TinysetError


def test_parse_budget():
    assert parse_budget("120KiB", (3, 32, 32), 10) == 120 * 1024
    assert parse_budget("1.5MB", (3, 32, 32), 10) == 1_500_000
    assert parse_budget("250000", (3, 32, 32), 10) == 250000
    # float32 images + int64 labels, and the set file's header (with its decoder config): set_bytes
    ipc10 = parse_budget("ipc10@32", (3, 32, 32), 10)
    assert ipc10 == set_bytes(10, 32, (3, 32, 32), 10) and 0 < ipc10 - (100 * 3072 * 4 + 100 * 8) < 300
    for bad in ("12 parsecs", "ipc0@32", "ipc10@12", ""):
        with pytest.raises(TinysetError):
            parse_budget(bad, (3, 32, 32), 10)


@pytest.mark.parametrize("quantizer,gran", [("uniform", "tensor"), ("uniform", "image"), ("apot", "channel"), ("codebook", "channel")])
def test_budget_never_exceeded(quantizer, gran):
    shape, k = (3, 32, 32), 10
    cands = (32, 5, 4, 3, 2, 1)
    for budget in [3100 * 10, 123457, 1_229_600, 2_000_003]:
        plan = plan_budget(budget, shape, k, cands, quantizer, gran)
        for o in plan.options:
            assert o.bytes <= budget
            if o.feasible:  # ipc is the most that fits: one more per class goes over
                assert set_bytes(o.ipc + 1, o.bits, shape, k, quantizer, gran) > budget
        assert plan.chosen.bytes <= budget and plan.reason
    with pytest.raises(TinysetError, match="below the smallest"):
        plan_budget(100, shape, k, cands, quantizer, gran)


def test_fixed_budget_grid_of_the_paper():
    """The paper's fixed budget (IPC 10 at 32 bits) holds 40@8, 80@4, 106@3 and, once the labels
    and clips are counted, 159@2 (160 would be over by a few bytes)."""
    b = parse_budget("ipc10@32", (3, 32, 32), 10)
    plan = plan_budget(b, (3, 32, 32), 10, (32, 8, 4, 3, 2))
    assert {o.bits: o.ipc for o in plan.options} == {32: 10, 8: 40, 4: 80, 3: 106, 2: 159}
    assert plan.chosen.bits == 3
    capped = plan_budget(b, (3, 32, 32), 10, (32, 8, 4, 3, 2), max_ipc=50)
    assert capped.chosen.bits == 4 and "all 50" in capped.reason


def test_compress_and_budget_cli(tmp_path, capsys):
    run = tmp_path / "rnd"
    assert main(["distill", "--method", "random", "--ipc", "3", "--no-eval", "--out", str(run), "--quiet"]) == 0
    src = load_artifact(run)
    out = tmp_path / "rnd-2bit"
    assert main(["compress", str(run), "--quantizer", "apot", "--bits", "2", "--out", str(out), "--quiet"]) == 0
    art = load_artifact(out)
    assert art.decoder["name"] == "quantized" and torch.equal(art.labels, src.labels)
    assert art.total_bytes == 30 * 256 * 2 // 8 + 4 + 15 and (out / "config.yaml").is_file()
    assert torch.unique(art.images).numel() <= 3  # ternary levels, one alpha
    assert "x smaller" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0  # the stored clip, read back from the tensors
    alpha = [k for k, v in art.manifest["components"].items() if v["role"] == "quantizer"]
    assert alpha and f"quantizer state: {alpha[0]} {art.tensors[alpha[0]].item():.4g}" in capsys.readouterr().out
    assert main(["compress", str(run), "--quantizer", "uniform", "--budget", "2KB", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert load_artifact(tmp_path / "b").total_bytes <= 2000
    assert main(["compress", str(run), "--budget", "10", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "below the smallest" in capsys.readouterr().err
    assert main(["budget", "--budget", "ipc10@32", "--rule", "fixed", "--quiet"]) == 0
    assert "chosen:" in capsys.readouterr().out
    out_b = tmp_path / "dm-budget"
    assert main(["distill", "--method", "dm", "--budget", "3KB", "--budget-rule", "fixed", "--no-eval", "--out", str(out_b),
                 "--quiet", "--set", "method_args.iterations=1", "--set", "method_args.batch_real=4"]) == 0
    text = capsys.readouterr().out
    assert "because" in text and load_artifact(out_b).set_bytes <= 3000
    assert json.loads((out_b / "budget.json").read_text())["rule"] == "fixed"
    assert main(["distill", "--method", "rded", "--budget", "3KB", "--no-eval", "--out", str(tmp_path / "x"), "--quiet"]) == 2


def test_compress_is_calibrated(tmp_path, digits):
    from tinyset.artifact import save_artifact

    x, y = digits.train.get_batch(torch.arange(40))
    src = save_artifact(tmp_path / "s", {"images": x, "labels": y}, {"dataset": "digits", "dataset_info": {"num_classes": 10}})
    # unsigned: these are raw [0, 1] pixels (a signed 2-bit midtread grid would spend its levels on {-a, 0, a})
    raw = compress_artifact(src, tmp_path / "raw", CompressConfig(quantizer="uniform", bits=2, signed=False, calibrate_steps=0))
    cal = compress_artifact(src, tmp_path / "cal", CompressConfig(quantizer="uniform", bits=2, signed=False, calibrate_steps=100, lr=0.05))
    mse = lambda p: load_artifact(p).manifest["compression"]["mse"]  # noqa: E731
    assert mse(cal) < mse(raw)

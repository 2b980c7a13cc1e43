"""Evaluation protocols as named presets, and the trainer options they set."""
import math

import pytest
import torch
from torch import nn

from tinyset.config import (EVAL_PROTOCOLS, EvalConfig, RunConfig, build_config, describe_protocol,
                            protocol_overrides, to_dict)
from tinyset.data import augment as A
from tinyset.data.base import TensorSplit
from tinyset.errors import TinysetError
from tinyset.eval.protocol import eval_spec
from tinyset.eval.schedules import get_schedule
from tinyset.eval.trainer import TrainSpec, make_ema, mix_batch, param_groups, train
from tinyset.kd import build_kd_loss


def test_default_is_rded_as_published():
    e = EvalConfig()
    assert e.protocol == "rded" and protocol_overrides(e) == {} and describe_protocol(e) == "rded"
    assert (e.epochs, e.batch_size, e.lr, e.temperature, e.schedule, e.augment) == (300, 50, 1e-3, 20.0, "half_cosine", "flip")
    assert e.decay_norm_and_bias is False and e.cutmix == 1.0 and e.mixup == 0.0


@pytest.mark.parametrize("name", list(EVAL_PROTOCOLS))
def test_each_protocol_sets_its_values(name):
    cfg = build_config(RunConfig, None, [f"eval.protocol={name}"])
    for k, v in EVAL_PROTOCOLS[name][1].items():
        have = getattr(cfg.eval, k)
        assert (tuple(have) if isinstance(have, tuple) else have) == v, (name, k)
    assert describe_protocol(cfg.eval) == name


def test_protocol_first_then_other_keys_and_later_overrides_win():
    cfg = build_config(RunConfig, None, ["eval.epochs=7", "eval.protocol=sre2l"])
    assert cfg.eval.epochs == 400  # the protocol named later resets its values
    cfg = build_config(RunConfig, None, ["eval.protocol=sre2l", "eval.epochs=7", "eval.temperature=4"])
    assert cfg.eval.epochs == 7 and cfg.eval.mixup == 1.0
    assert protocol_overrides(cfg.eval) == {"epochs": 7, "temperature": 4.0}
    assert describe_protocol(cfg.eval) == "sre2l (epochs=7, temperature=4.0)"
    # within one mapping (a YAML file, a saved config.yaml) the protocol applies first whatever the key order
    from tinyset.config import apply_mapping

    e = apply_mapping(RunConfig(), {"eval": {"epochs": 9, "protocol": "e2d"}}).eval
    assert e.epochs == 9 and e.ema == 0.99 and e.ema_buffers is False and e.loss == "mse"


def test_saved_config_reloads_to_the_same_values(tmp_path):
    from tinyset.config import apply_mapping

    cfg = build_config(RunConfig, None, ["eval.protocol=e2d", "eval.epochs=11"])
    again = apply_mapping(RunConfig(), to_dict(cfg))
    assert to_dict(again.eval) == to_dict(cfg.eval)


def test_unknown_protocol_is_one_line_error():
    with pytest.raises(TinysetError, match="unknown eval protocol 'rdde'; did you mean 'rded'"):
        build_config(RunConfig, None, ["eval.protocol=rdde"])


def test_eval_spec_carries_every_protocol_option():
    e = build_config(RunConfig, None, ["eval.protocol=sre2l"]).eval
    spec = eval_spec(e)
    assert (spec.augment, spec.shift_pad, spec.mixup, spec.mixup_alpha, spec.cutmix, spec.epochs, spec.batch_size) == \
        ("shift", 4, 1.0, 0.8, 0.0, 400, 128)
    e = build_config(RunConfig, None, ["eval.protocol=e2d"]).eval
    spec = eval_spec(e)
    assert (spec.ce_weight, spec.ema, spec.ema_buffers, spec.schedule, spec.crop_scale) == \
        (0.025, 0.99, False, "smoothed_cosine", (0.5, 1.0))


def test_half_cosine_golden():
    f = get_schedule("half_cosine", 300)
    assert f(0) == 1.0
    assert f(300) == pytest.approx(0.5)
    assert f(150) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert f(400) == pytest.approx(0.5)  # held after the end


def test_no_weight_decay_on_norm_and_bias():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    m(torch.zeros(2, 3, 5, 5))
    groups = param_groups(m, 0.01, decay_norm_and_bias=False)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert {p.ndim for p in groups[0]["params"]} == {2, 4} and {p.ndim for p in groups[1]["params"]} == {1}
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in m.parameters())
    # an AdamW step on zero gradients: only the decayed weights shrink
    opt = torch.optim.AdamW(groups, lr=0.1)
    before = [p.detach().clone() for p in m.parameters()]
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for b, p in zip(before, m.parameters()):
        assert torch.equal(b, p) == (p.ndim == 1)
    assert len(param_groups(m, 0.01, decay_norm_and_bias=True)) == 1


def test_mix_batch_picks_at_most_one_mixer():
    x = torch.stack([torch.full((3, 8, 8), float(i)) for i in range(6)])
    g = torch.Generator().manual_seed(0)
    out, mix = mix_batch(x, TrainSpec(cutmix=0.0, mixup=1.0, mixup_alpha=0.8), g)
    perm, lam = mix
    assert torch.allclose(out, lam * x + (1 - lam) * x[perm])
    out, mix = mix_batch(x, TrainSpec(cutmix=1.0, mixup=0.0), g)
    perm, lam = mix
    own = (out == x).float().mean(dim=(1, 2, 3))
    assert torch.all((out == x) | (out == x[perm]))  # every pixel comes from the image or its partner
    out, mix = mix_batch(x, TrainSpec(cutmix=0.0, mixup=0.0), g)
    assert mix is None and out is x
    # half/half: over many draws both mixers occur and nothing else
    kinds = set()
    for _ in range(40):
        out, mix = mix_batch(x, TrainSpec(cutmix=0.5, mixup=0.5), g)
        kinds.add("mixup" if not torch.all((out == x) | (out == x[mix[0]])) else "cutmix")
    assert kinds == {"cutmix", "mixup"}
    assert own.numel() == 6


def test_flip_only_and_shift_without_flip():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    out = A.random_flip(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    same = (out == x.repeat(50, 1, 1, 1)).flatten(1).all(1)
    flipped = (out == x.flip(-1).repeat(50, 1, 1, 1)).flatten(1).all(1)
    assert torch.all(same | flipped) and same.any() and flipped.any()
    out = A.random_shift_flip(x, 0, torch.Generator().manual_seed(0), flip=False)
    assert torch.equal(out, x)


def test_ce_on_the_unmixed_label_is_added():
    torch.manual_seed(0)
    x, y = torch.rand(20, 3, 8, 8), torch.arange(20) % 4
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 4))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(192, 4))
    losses = {}
    for w in (0.0, 0.5):
        m = nn.Sequential(nn.Flatten(), nn.Linear(192, 4))
        m.load_state_dict(model.state_dict())
        spec = TrainSpec(epochs=1, batch_size=20, optimizer="sgd", lr=0.0, augment="none", ce_weight=w,
                         channels_last=False)
        res = train(m, TensorSplit(x, y), spec, build_kd_loss("mse"), teacher=teacher, progress=False)
        losses[w] = res.history[0]["loss"]
    ce = float(nn.functional.cross_entropy(model(x), y).detach())
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * ce, rel=1e-5)


def test_ema_of_parameters_only_keeps_live_buffers():
    torch.manual_seed(0)
    for buffers in (True, False):
        m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        ema = make_ema(m, 0.5, buffers=buffers)
        ema.update_parameters(m)  # the first update copies
        m.train()
        m(torch.randn(8, 3, 6, 6) * 3 + 1)  # moves the live running statistics
        with torch.no_grad():
            m[0].weight.add_(1.0)
        ema.update_parameters(m)
        # parameters are averaged either way; buffers are averaged too, or follow the live model
        assert torch.allclose(ema.module[0].weight, m[0].weight - 0.5)
        assert torch.equal(ema.module[1].running_mean, m[1].running_mean) == (not buffers)


def test_cpu_bf16_detection_reads_the_flags():
    from tinyset.utils.hardware import cpu_has_native_bf16

    assert cpu_has_native_bf16(frozenset({"avx2", "avx512_bf16"}))
    assert cpu_has_native_bf16(frozenset({"amx_bf16"}))
    assert not cpu_has_native_bf16(frozenset({"avx2", "avx512f"}))


def test_bad_protocol_values_are_one_line_errors_each():
    from tinyset.config import ConfigError
    from tinyset.jobs.validate import check_config

    cfg = build_config(RunConfig, None, ["eval.cutmix=0.8", "eval.mixup=0.5", "eval.augment=zoom", "eval.mixup_alpha=0"])
    with pytest.raises(ConfigError) as e:
        check_config(cfg, synthesis=False, evaluation=True)
    text = "\n".join(e.value.problems)
    assert "eval.cutmix + eval.mixup is at most 1" in text and "unknown eval.augment 'zoom'" in text
    assert "eval.mixup_alpha must be positive" in text


def test_cli_protocols_and_eval_protocol_flag(capsys):
    from tinyset import cli
    from tinyset.cli.main import _run_config, build_parser

    assert cli.main(["protocols", "-v"]) == 0
    out = capsys.readouterr().out
    for name in EVAL_PROTOCOLS:
        assert out.count(f"{name}: ") == 1
    assert "temperature=30.0" in out and "mixup=1.0" in out
    args = build_parser().parse_args(["eval", "runs/x", "--protocol", "sre2l", "--epochs", "5"])
    cfg = _run_config(args, RunConfig())
    assert cfg.eval.protocol == "sre2l" and cfg.eval.mixup == 1.0 and cfg.eval.epochs == 5  # the flag beats the protocol

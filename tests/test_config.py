import pytest

from tinyset.config import RunConfig, apply_mapping, build_config, parse_override
from tinyset.errors import TinysetError


def test_dotted_overrides_and_types(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("method: e2d\nipc: 5\neval:\n  epochs: 7\n")
    cfg = build_config(RunConfig, str(p), ["eval.epochs=300", "eval.crop_scale=[0.08, 1.0]", "method_args.iterations=50"])
    assert cfg.method == "e2d" and cfg.ipc == 5 and cfg.eval.epochs == 300
    assert cfg.eval.crop_scale == (0.08, 1.0) and cfg.method_args == {"iterations": 50}


def test_overrides_of_one_nested_method_section_merge_key_by_key(tmp_path):
    # two --set on method_args.quantizer used to keep only the last: the quantizer lost its name, and
    # `distill` made a float set without a word
    p = tmp_path / "c.yaml"
    p.write_text("method: dm\nmethod_args:\n  quantizer:\n    granularity: image\n  iterations: 9\n")
    cfg = build_config(RunConfig, str(p), ["method_args.quantizer.name=uniform", "method_args.quantizer.bits=2",
                                           "method_args.lr=0.001"])
    assert cfg.method_args == {"quantizer": {"granularity": "image", "name": "uniform", "bits": 2}, "iterations": 9,
                               "lr": 0.001}
    cfg = build_config(RunConfig, None, ["method_args.quantizer.name=uniform", "method_args.quantizer=null"])
    assert cfg.method_args == {"quantizer": None}  # a value, not a mapping, still replaces


def test_config_errors(tmp_path):
    with pytest.raises(TinysetError, match="unknown config key 'eval.epoch'"):
        apply_mapping(RunConfig(), parse_override("eval.epoch=3"))
    with pytest.raises(TinysetError, match="expected an integer"):
        apply_mapping(RunConfig(), parse_override("ipc=many"))
    with pytest.raises(TinysetError, match="not found"):
        build_config(RunConfig, str(tmp_path / "none.yaml"))
    with pytest.raises(TinysetError, match="must look like"):
        parse_override("ipc")

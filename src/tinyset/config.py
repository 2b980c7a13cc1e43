"""Dataclass configs, YAML presets and dotted overrides (``--set eval.epochs=300``).

Every run saves its resolved config as ``config.yaml`` beside its output (timm's ``args.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import TinysetError

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class DataConfig:
    dataset: str = "digits"  # registry name, npz:<path> or imagefolder:<root>
    data_root: str | None = None  # folder of named npz files / torchvision data; default $TINYSET_DATA
    download: bool = False  # torchvision datasets only; never implied
    image_size: int | None = None  # imagefolder: resize+centre-crop to this size (default 224)
    num_workers: int = 0  # DataLoader workers for file-backed datasets
    decode_cache: str = "memory"  # imagefolder: keep decoded images in "memory", on "disk" ($TINYSET_CACHE/decoded), or "off"


@dataclass
class TeacherConfig:
    model: str = "convnet3"
    checkpoint: str | None = None  # a user's own checkpoint (.pt); skips training
    pretrained: str | None = None  # tv:<name> models: torchvision weights (DEFAULT, an enum name) or a local state_dict file
    head_classes: tuple[int, ...] = ()  # pretrained: ImageNet index of each dataset class (default: the folder's classes.tsv)
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0
    cache_dir: str | None = None  # default $TINYSET_CACHE or ~/.cache/tinyset
    trust_checkpoint: bool = False  # allow a pickled checkpoint (can run code): only for files you trust
    extra: tuple[str, ...] = ()  # more teachers for recovery, used in turn one per step: model names or .pt paths
    amp: bool = False  # train the teacher under bf16 autocast (CUDA or a CPU with bf16); part of the cache key only when on


@dataclass
class EvalConfig:
    protocol: str = "rded"  # a named bundle of the values below (`tinyset protocols`); set first, later keys win
    student: str = "convnet3"
    epochs: int = 300
    batch_size: int = 50
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    decay_norm_and_bias: bool = False  # weight decay on norm weights and biases too (timm/RDED: off)
    schedule: str = "half_cosine"  # cosine | half_cosine (RDED: ends at 0.5 lr) | smoothed_cosine (EDC/E2D) | constant
    loss: str = "kd"  # a KD-loss registry name (soft-label modes)
    temperature: float = 20.0
    ce_weight: float = 0.0  # + this x CE on the un-mixed hard label (E2D: 0.025)
    label_modes: tuple[str, ...] = ("soft",)  # any of: soft (teacher online), hard (stored labels), stored (stored quantized soft labels, no teacher)
    seeds: int = 3
    augment: str = "flip"  # flip | rrc (RandomResizedCrop, crop_scale) | shift (pad shift_pad + crop) | none
    crop_scale: tuple[float, float] = (0.5, 1.0)  # augment=rrc: RandomResizedCrop scale
    shift_pad: int = 4  # augment=shift: zero padding before the random crop back
    flip: bool = True  # random horizontal flip (augment rrc, shift or flip)
    cutmix: float = 1.0  # probability of CutMix per batch
    cutmix_alpha: float = 1.0  # CutMix area ~ Beta(alpha, alpha)
    mixup: float = 0.0  # probability of MixUp per batch (SRe2L: 1.0); with cutmix, one draw picks at most one
    mixup_alpha: float = 0.8  # MixUp weight ~ Beta(alpha, alpha)
    ema: float | None = None  # EMA of student weights (EDC/E2D use 0.99)
    ema_buffers: bool = True  # the EMA also averages buffers (BN statistics); E2D's averages parameters only
    random_baseline: bool = True  # also train on a random real subset of the same size
    synthesis_seeds: bool = False  # re-synthesise the set for every eval seed (paired), so the std holds synthesis variance too
    he_da: float | None = None  # HE-DA: re-mix this top-energy fraction of each batch (0.5 in the paper)
    eval_batch_size: int = 500


# Student-evaluation protocols: named bundles of EvalConfig values. Setting ``eval.protocol`` applies
# its bundle first; any other eval key in the same mapping, and every later override, wins. Values
# follow the references' own training scripts (notes: ../shared/notes/reference-findings.md).
EVAL_PROTOCOLS: dict[str, tuple[str, dict]] = {
    "rded": (
        "RDED's CIFAR/ConvNet evaluation: 300 epochs, batch 50, AdamW lr 1e-3 wd 0.01 (no decay on norm/bias), "
        "half-period cosine (ends at 0.5 lr), KL at T=20 on the teacher's output for the same mixed view, "
        "flip + CutMix (beta 1), no crop",
        dict(epochs=300, batch_size=50, optimizer="adamw", lr=1e-3, weight_decay=0.01, decay_norm_and_bias=False,
             schedule="half_cosine", loss="kd", temperature=20.0, ce_weight=0.0, augment="flip", flip=True,
             cutmix=1.0, cutmix_alpha=1.0, mixup=0.0, ema=None, ema_buffers=True)),
    "sre2l": (
        "SRe2L's CIFAR relabel: 400 epochs, batch 128, AdamW lr 1e-3 wd 0.01, cosine, KL at T=30, "
        "pad-4 crop + flip, MixUp (alpha 0.8) on every batch",
        dict(epochs=400, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.01, decay_norm_and_bias=True,
             schedule="cosine", loss="kd", temperature=30.0, ce_weight=0.0, augment="shift", shift_pad=4, flip=True,
             cutmix=0.0, mixup=1.0, mixup_alpha=0.8, ema=None, ema_buffers=True)),
    "e2d": (
        "E2D's (EDC's) trainer: 300 epochs, batch 100, AdamW lr 1e-3 wd 0.01, smoothed cosine (cos2), MSE on "
        "logits + 0.025 CE on the un-mixed hard label, EMA 0.99 of the parameters only, crop 0.5-1 + flip + CutMix",
        dict(epochs=300, batch_size=100, optimizer="adamw", lr=1e-3, weight_decay=0.01, decay_norm_and_bias=True,
             schedule="smoothed_cosine", loss="mse", temperature=1.0, ce_weight=0.025, augment="rrc",
             crop_scale=(0.5, 1.0), flip=True, cutmix=1.0, cutmix_alpha=1.0, mixup=0.0, ema=0.99, ema_buffers=False)),
    "fast": (
        "smoke runs and CI only: 100 epochs, batch 50, AdamW lr 0.01 wd 0.01, cosine, KL at T=4, crop 0.5-1 + flip "
        "+ CutMix (the short protocol of the first benchmark tables; ~20 points under rded at CIFAR-10 IPC 10)",
        dict(epochs=100, batch_size=50, optimizer="adamw", lr=0.01, weight_decay=0.01, decay_norm_and_bias=True,
             schedule="cosine", loss="kd", temperature=4.0, ce_weight=0.0, augment="rrc", crop_scale=(0.5, 1.0),
             flip=True, cutmix=1.0, cutmix_alpha=1.0, mixup=0.0, ema=None, ema_buffers=True)),
}


def protocol_values(name: str) -> dict:
    """The EvalConfig values of a named protocol; an unknown name is a one-line error."""
    if name not in EVAL_PROTOCOLS:
        import difflib

        close = difflib.get_close_matches(str(name), list(EVAL_PROTOCOLS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TinysetError(f"unknown eval protocol {name!r}; {hint}choose from {', '.join(EVAL_PROTOCOLS)} (`tinyset protocols`)")
    return dict(EVAL_PROTOCOLS[name][1])


def protocol_overrides(ecfg: "EvalConfig") -> dict:
    """The values of ``ecfg`` that differ from its named protocol's bundle ({} = the protocol as published)."""
    if ecfg.protocol not in EVAL_PROTOCOLS:
        return {}
    out = {}
    for k, v in protocol_values(ecfg.protocol).items():
        have = getattr(ecfg, k)
        if (tuple(have) if isinstance(have, (list, tuple)) else have) != (tuple(v) if isinstance(v, (list, tuple)) else v):
            out[k] = have
    return out


def describe_protocol(ecfg: "EvalConfig") -> str:
    """``rded`` or ``rded (epochs=100, temperature=4)``: the name every table title and eval.json carries."""
    over = protocol_overrides(ecfg)
    return ecfg.protocol + (f" ({', '.join(f'{k}={v}' for k, v in over.items())})" if over else "")


# A key that names a bundle of sibling values: (dataclass, key) -> values of the bundle's name.
BUNDLES = {(EvalConfig, "protocol"): protocol_values}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method: str = "random"
    method_args: dict = field(default_factory=dict)  # overrides of the method's own config dataclass
    ipc: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = True  # ~1.45x faster pixel optimisation on CPU, faster convs on GPU
    amp: bool = False  # bfloat16 autocast (CUDA, or CPU with avx512_bf16/AMX: ~2x faster training there)
    evaluate: bool = True


def to_dict(cfg: Any) -> Any:
    if is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


class ConfigError(TinysetError):
    """Several bad config values at once: the CLI prints one ``error:`` line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = [" ".join(p.split()) for p in problems]
        super().__init__("; ".join(self.problems))


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type (``float | None``, ``tuple[float, float]``,
    ``tuple[str, ...]``, ...). YAML reads ``1e-3`` as a string, so numbers are parsed from strings too."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            if len(non_none) < len(args):
                return None
        errors = []
        for a in non_none:
            try:
                return coerce(value, a, key)
            except TinysetError as e:
                errors.append(str(e))
        allowed = " or ".join(_type_name(a) for a in non_none) + (" or null" if len(non_none) < len(args) else "")
        raise TinysetError(f"config key {key}: expected {allowed}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[str(value).strip().lower()]
        raise TinysetError(f"config key {key}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise TinysetError(f"config key {key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            f = None
        if f is not None and f.is_integer():
            return int(f)
        raise TinysetError(f"config key {key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise TinysetError(f"config key {key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TinysetError(f"config key {key}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise TinysetError(f"config key {key}: expected a string, got {value!r}")
        return str(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        seq = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], key) for v in seq)
        if args and len(seq) != len(args):
            raise TinysetError(f"config key {key}: expected {len(args)} values like [{', '.join(_type_name(a) for a in args)}], got {value!r}")
        return tuple(coerce(v, a, key) for v, a in zip(seq, args)) if args else tuple(seq)
    if origin is list or hint is list:
        seq = list(value) if isinstance(value, (list, tuple)) else [value]
        return [coerce(v, args[0], key) for v in seq] if args else seq
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TinysetError(f"config key {key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _hints(cls: type) -> dict[str, Any]:
    try:
        return get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to no coercion
        return {}


def apply_mapping(cfg: Any, mapping: dict, prefix: str = "") -> Any:
    """Set fields of a (nested) dataclass from a mapping, converting each value to the field's
    declared type. Every bad key or value is reported (one problem each) before anything is set."""
    problems: list[str] = []
    updates = _collect(cfg, mapping, prefix, problems)
    if problems:
        raise ConfigError(problems)
    for target, key, value in updates:
        setattr(target, key, value)
    return cfg


def _collect(cfg: Any, mapping: dict, prefix: str, problems: list[str]) -> list[tuple[Any, str, Any]]:
    names = {f.name for f in fields(cfg)}
    hints = _hints(type(cfg))
    updates: list[tuple[Any, str, Any]] = []
    # a bundle key (eval.protocol) goes first and expands into its values; the mapping's other keys win
    bundle_keys = [k for k in mapping if (type(cfg), k) in BUNDLES]
    for key in bundle_keys:
        try:
            updates += _collect(cfg, BUNDLES[(type(cfg), key)](str(mapping[key])), prefix, problems)
        except TinysetError as e:
            problems.append(str(e))
    mapping = {**{k: mapping[k] for k in bundle_keys}, **{k: v for k, v in mapping.items() if k not in bundle_keys}}
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if key not in names:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
            problems.append(f"unknown config key {full!r}; {hint}known here: {', '.join(sorted(names))}")
            continue
        current = getattr(cfg, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                problems.append(f"config key {full!r} is a section; give it a mapping")
                continue
            updates += _collect(current, value, f"{full}.", problems)
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                problems.append(f"config key {full!r} takes a mapping")
                continue
            updates.append((cfg, key, deep_merge(current, value)))
        else:
            try:
                updates.append((cfg, key, coerce(value, hints.get(key, Any), full)))
            except TinysetError as e:
                problems.append(str(e))
    return updates


def deep_merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, nested mappings merged key by key: two overrides of one free-form
    section (``method_args.quantizer.name=...`` then ``method_args.quantizer.bits=...``) both hold."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """``a.b.c=value`` -> {"a": {"b": {"c": value}}}; the value is parsed as YAML."""
    if "=" not in text:
        raise TinysetError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    out: dict = {}
    node = out
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists() and (PRESET_DIR / f"{path}.yaml").exists():
        p = PRESET_DIR / f"{path}.yaml"  # a bundled preset by name
    if not p.exists():
        raise TinysetError(f"config file {path} not found (bundled presets: {', '.join(list_presets())})")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise TinysetError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise TinysetError(f"config file {p} must hold a mapping at the top level")
    return data


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def build_config(cls: type, config_file: str | None = None, overrides: list[str] | None = None, base: Any = None) -> Any:
    cfg = base if base is not None else cls()
    if config_file:
        apply_mapping(cfg, load_yaml(config_file))
    for o in overrides or []:
        apply_mapping(cfg, parse_override(o))
    return cfg


def save_yaml(data: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def describe_fields(cls: type) -> list[tuple[str, str, str]]:
    """(name, default, doc) for every field of a config dataclass, the doc being the field's trailing
    ``# comment`` in the source (inherited fields included), for ``tinyset methods -v``."""
    import inspect
    import re
    from dataclasses import MISSING

    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if is_dataclass(k)]):
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^\n#]*#\s*(.+)$", src, re.MULTILINE):
            docs[m.group(1)] = m.group(2).strip()
    rows = []
    for f in fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        shown = "null" if default is None else (str(default).lower() if isinstance(default, bool) else
                                                (list(default) if isinstance(default, tuple) else default))
        rows.append((f.name, str(shown), docs.get(f.name, "")))
    return rows

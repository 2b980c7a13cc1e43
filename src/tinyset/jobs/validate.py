"""Check a whole run config before any work: every name, type and range a user can get wrong, so a
typo fails in a second with one line per problem instead of after the teacher and the synthesis.

``check_config`` needs nothing but the config; ``check_against_dataset`` runs once the dataset is
loaded (models are built for its shape, selection methods compared with its class sizes). Neither
touches the disk."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import ConfigError, RunConfig, apply_mapping
from ..data.base import Dataset
from ..errors import TinysetError

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw", "adam")


def _check_model_name(spec: str, what: str, problems: list[str]) -> None:
    from ..models.registry import MODELS, parse_model_name

    try:
        name, _ = parse_model_name(spec)
    except TinysetError as e:
        problems.append(f"{what}: {e}")
        return
    if name.startswith("tv:"):
        name = name[3:]
    elif name in MODELS:
        return
    import torchvision

    if name not in torchvision.models.list_models():
        problems.append(f"unknown {what} model {spec!r}; {MODELS.suggest(name)}see `tinyset models`")


def check_dataset_name(spec: str, problems: list[str]) -> None:
    from ..data.registry import _PREFIXES, DATASETS

    prefix, sep, _ = str(spec).partition(":")
    if sep and prefix in _PREFIXES:
        return
    if spec not in DATASETS:
        problems.append(f"unknown dataset {spec!r}; {DATASETS.suggest(spec)}known: {', '.join(DATASETS.names())}")


def check_device(name: str, problems: list[str]) -> None:
    if name == "auto" or name == "cpu":
        return
    try:
        dev = torch.device(name)
    except RuntimeError:
        problems.append(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            problems.append(f"device {name!r} asked for, but this machine has no usable CUDA GPU; use --device cpu")
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            problems.append(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        problems.append(f"device {name!r} asked for, but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        problems.append(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")


def _positive(value, key: str, problems: list[str]) -> None:
    if value is not None and value < 1:
        problems.append(f"{key} must be at least 1, got {value}")


def _fraction(value, key: str, problems: list[str], low_open=True) -> None:
    if value is not None and not (0 < value <= 1 if low_open else 0 <= value <= 1):
        problems.append(f"{key} must be in (0, 1], got {value}")


def check_method(cfg: RunConfig, problems: list[str]) -> None:
    from ..methods import METHODS

    if cfg.method not in METHODS:
        problems.append(f"unknown method {cfg.method!r}; {METHODS.suggest(cfg.method)}known: {', '.join(METHODS.names())}")
        return
    try:  # method_args against the method's own config dataclass
        apply_mapping(METHODS.get(cfg.method).Config(), dict(cfg.method_args), prefix="method_args.")
    except ConfigError as e:
        problems += e.problems
    except TinysetError as e:
        problems.append(str(e))


def check_eval(cfg: RunConfig, problems: list[str]) -> None:
    from ..eval.protocol import LABEL_MODES
    from ..config import EVAL_PROTOCOLS
    from ..eval.schedules import SCHEDULES
    from ..eval.trainer import AUGMENTS
    from ..kd import KD_LOSSES

    e = cfg.eval
    _check_model_name(e.student, "student", problems)
    bad = [m for m in e.label_modes if m not in LABEL_MODES]
    if bad or not e.label_modes:
        problems.append(f"label mode(s) {', '.join(map(repr, bad)) or 'none'}: choose from {', '.join(LABEL_MODES)}")
    _positive(e.seeds, "eval.seeds", problems)
    _positive(e.epochs, "eval.epochs", problems)
    _positive(e.batch_size, "eval.batch_size", problems)
    lo, hi = e.crop_scale
    if not 0 < lo <= hi <= 1:
        problems.append(f"eval.crop_scale must be two numbers 0 < low <= high <= 1, got [{lo}, {hi}]")
    if "soft" in e.label_modes and e.loss not in KD_LOSSES:
        problems.append(f"unknown kd loss {e.loss!r}; {KD_LOSSES.suggest(e.loss)}see `tinyset kd-losses`")
    if e.schedule not in SCHEDULES:
        problems.append(f"unknown eval.schedule {e.schedule!r}; choose from {', '.join(SCHEDULES)}")
    if e.optimizer not in OPTIMIZERS:
        problems.append(f"unknown eval.optimizer {e.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if e.ema is not None and not 0 < e.ema < 1:
        problems.append(f"eval.ema must be in (0, 1) or null, got {e.ema}")
    _fraction(e.he_da, "eval.he_da", problems)
    for key in ("cutmix", "mixup"):
        if not 0 <= getattr(e, key) <= 1:
            problems.append(f"eval.{key} is a probability in [0, 1], got {getattr(e, key)}")
    if e.cutmix + e.mixup > 1 + 1e-9:
        problems.append(f"eval.cutmix + eval.mixup is at most 1 (one draw picks one mixer per batch), got {e.cutmix + e.mixup:g}")
    for key in ("cutmix_alpha", "mixup_alpha"):
        if getattr(e, key) <= 0:
            problems.append(f"eval.{key} must be positive, got {getattr(e, key)}")
    if e.augment not in AUGMENTS:
        problems.append(f"unknown eval.augment {e.augment!r}; choose from {', '.join(AUGMENTS)}")
    if e.shift_pad < 0:
        problems.append(f"eval.shift_pad must be >= 0, got {e.shift_pad}")
    if e.ce_weight < 0:
        problems.append(f"eval.ce_weight must be >= 0, got {e.ce_weight}")
    if e.protocol not in EVAL_PROTOCOLS:
        problems.append(f"unknown eval.protocol {e.protocol!r}; choose from {', '.join(EVAL_PROTOCOLS)}")
    if e.lr <= 0:
        problems.append(f"eval.lr must be positive, got {e.lr}")


def check_teacher(cfg: RunConfig, problems: list[str]) -> None:
    t = cfg.teacher
    if t.checkpoint:
        if not Path(t.checkpoint).exists():
            problems.append(f"teacher checkpoint {t.checkpoint} not found")
    else:
        _check_model_name(t.model, "teacher", problems)
        _positive(t.epochs, "teacher.epochs", problems)
        _positive(t.batch_size, "teacher.batch_size", problems)
        if t.optimizer not in OPTIMIZERS:
            problems.append(f"unknown teacher.optimizer {t.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    for spec in t.extra:
        if not (spec.endswith(".pt") or spec.endswith(".safetensors") or Path(spec).exists()):
            _check_model_name(spec, "teacher.extra", problems)


def needs_teacher(cfg: RunConfig, synthesis: bool = True, evaluation: bool | None = None) -> bool:
    """Whether the run will use a teacher: the method needs one, or soft-label evaluation does."""
    from ..methods import METHODS

    evaluation = cfg.evaluate if evaluation is None else evaluation
    by_method = synthesis and cfg.method in METHODS and METHODS.get(cfg.method).needs_teacher
    return bool(by_method or (evaluation and "soft" in cfg.eval.label_modes) or cfg.teacher.checkpoint)


def check_config(cfg: RunConfig, *, synthesis: bool = True, evaluation: bool | None = None,
                 teacher: bool | None = None) -> None:
    """Raise one ``ConfigError`` listing every problem in ``cfg`` that can be seen without data."""
    problems: list[str] = []
    teacher = needs_teacher(cfg, synthesis, evaluation) if teacher is None else teacher
    check_dataset_name(cfg.data.dataset, problems)
    check_device(cfg.device, problems)
    if synthesis:
        check_method(cfg, problems)
        _positive(cfg.ipc, "ipc", problems)
    if cfg.seed < 0:
        problems.append(f"seed must be >= 0, got {cfg.seed}")
    if evaluation if evaluation is not None else cfg.evaluate:
        check_eval(cfg, problems)
    if teacher:
        check_teacher(cfg, problems)
    if problems:
        raise ConfigError(problems)


def check_against_dataset(cfg: RunConfig, ds: Dataset, *, synthesis: bool = True, evaluation: bool | None = None,
                          teacher: bool | None = None, extra_models: dict[str, str] | None = None) -> None:
    """Problems that need the loaded dataset: models that cannot be built for its shape, a selection
    method asked for more images per class than a class has."""
    from ..models import get_model

    problems: list[str] = []
    teacher = needs_teacher(cfg, synthesis, evaluation) if teacher is None else teacher
    models = dict(extra_models or {})
    if evaluation if evaluation is not None else cfg.evaluate:
        models["student"] = cfg.eval.student
    if teacher and not cfg.teacher.checkpoint:
        models["teacher"] = cfg.teacher.model
    for what, spec in models.items():
        try:
            get_model(spec, ds.info)
        except TinysetError as e:
            problems.append(f"{what} model {spec!r}: {e}")
        except Exception as e:  # noqa: BLE001 - e.g. a torchvision model that cannot take this input size
            problems.append(f"{what} model {spec!r} cannot be built for {ds.info.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if synthesis:
        from ..methods import METHODS

        if cfg.method in METHODS and getattr(METHODS.get(cfg.method), "selects_real", False):
            sizes = [(c, len(ds.train.class_indices(c))) for c in range(ds.info.num_classes)]
            small = [(c, n) for c, n in sizes if n < cfg.ipc]
            if small:
                c, n = min(small, key=lambda t: t[1])
                problems.append(
                    f"method {cfg.method} selects real images, but class {ds.info.class_names[c]!r} has only {n} "
                    f"training images (ipc {cfg.ipc}; {len(small)} class(es) too small); lower --ipc to at most {n}")
    if problems:
        raise ConfigError(problems)

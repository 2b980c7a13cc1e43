"""Pinned teachers: the benchmarks' teachers, trained once and committed, so no session retrains one
by accident and a fresh machine reruns any row on the very same weights.

Each pinned teacher is ``teachers/NAME.safetensors`` (weights, model name, dataset info and training
meta in the header) beside ``teachers/NAME.yaml`` (the recipe, the command that retrains it, its
test accuracy and the file's sha256). Benchmarks call ``load_pinned(NAME, ds)``; the file's sha256
is checked against the YAML before use. ``--retrain-teacher`` (or this script) retrains from the
recipe and refuses to replace the pinned file unless the new test accuracy is within a point of it.

    python benchmarks/pinned.py cifar10-convnet3 --data-root ../shared/data            # pin (or check) it
    python benchmarks/pinned.py cifar10-convnet3 --data-root ../shared/data --retrain  # retrain + compare

Self-supervised teachers (``PINNED_SSL``, e.g. ``cifar10-05-barlow-convnet3w32``) are pinned the same
way: their source is a named subset (``SOURCES``), the encoder is trained without labels, and the
committed file is the encoder with its linear-probe head folded in (standardisation included), so it
is an ordinary classifier checkpoint; ``test_accuracy`` in its YAML is that linear probe's accuracy on
the source's test images, and a retrain must land within a point of it. ``load_pinned_ssl`` hands it
to the SSL pipeline as an encoder (the head is dropped).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tinyset.config import DataConfig, TeacherConfig, to_dict
from tinyset.data import load_dataset
from tinyset.errors import TinysetError
from tinyset.models import get_model, load_model, save_model_safetensors, sha256_file
from tinyset.teachers.ssl import SSLConfig, SSLTeacher, get_ssl_teacher
from tinyset.teachers.supervised import Teacher, get_teacher
from tinyset.utils.files import atomic_write_text

HERE = Path(__file__).parent
TEACHERS = HERE / "teachers"
log = logging.getLogger("benchmarks.pinned")
TOLERANCE = 1.0  # points of test accuracy a retrained teacher may differ from the pinned one


@dataclass(frozen=True)
class Pinned:
    dataset: str  # load_dataset spec relative to --data-root (imagefolder paths are joined to it)
    image_size: int | None
    teacher: TeacherConfig
    about: str

    def data_config(self, data_root: str) -> DataConfig:
        spec = self.dataset
        if spec.startswith("imagefolder:"):
            spec = f"imagefolder:{Path(data_root) / spec.split(':', 1)[1]}"
        return DataConfig(dataset=spec, data_root=data_root, image_size=self.image_size)


PINNED: dict[str, Pinned] = {
    "cifar10-convnet3": Pinned(
        "cifar10", None, TeacherConfig(model="convnet3", epochs=10, batch_size=128, lr=0.05, weight_decay=5e-4),
        "ConvNet-3 (width 128, BatchNorm) on CIFAR-10, 10 epochs SGD: the decoupled/protocol/KD/QuADD teacher"),
    "imagenette64-convnet4": Pinned(
        "imagefolder:imagenette-128", 64, TeacherConfig(model="convnet4", epochs=30, batch_size=64, lr=0.05,
                                                        weight_decay=5e-4),
        "ConvNet-4 (width 128, BatchNorm) on Imagenette at 64 px, 30 epochs SGD: the E2D-at-64-px teacher"),
}


def cifar10_05(data_root: str):
    """CIFAR-10 classes 0-4 (airplane, automobile, bird, cat, deer), 10,000 evenly spaced training
    images (labels kept in the split, never read by the SSL teacher or the self-supervised methods);
    test: those classes' 5,000 test images. Its own mean/std."""
    from tinyset.eval.transfer import subset_dataset

    ds = load_dataset("cifar10", DataConfig(dataset="cifar10", data_root=data_root))
    return subset_dataset(ds, range(5), train_limit=10000, name="cifar10-c0-4-10k")


SOURCES = {"cifar10-05-10k": cifar10_05}  # name -> (data_root -> Dataset)


@dataclass(frozen=True)
class PinnedSSL:
    source: str  # a key of SOURCES
    ssl: SSLConfig
    about: str
    probe_steps: int = 300  # the linear probe whose accuracy is pinned (full-batch Adam, standardised features)

    def dataset(self, data_root: str):
        return SOURCES[self.source](data_root)


PINNED_SSL: dict[str, PinnedSSL] = {
    "cifar10-05-barlow-convnet3w32": PinnedSSL(
        "cifar10-05-10k", SSLConfig(method="barlow_twins", model="convnet:depth=3,width=32", epochs=6, batch_size=256,
                                    lr=1e-3, weight_decay=1e-4, proj_dim=1024, lambd=5e-3, seed=0),
        "Barlow Twins ConvNet-3 (width 32, 512-d features) on CIFAR-10 classes 0-4 without labels (10,000 images), "
        "6 epochs: the ssdd benchmark's teacher (issue 23)"),
}


def paths(name: str) -> tuple[Path, Path]:
    return TEACHERS / f"{name}.safetensors", TEACHERS / f"{name}.yaml"


def _entry(name: str) -> Pinned:
    if name not in PINNED:
        raise TinysetError(f"unknown pinned teacher {name!r}; known: {', '.join([*PINNED, *PINNED_SSL])}")
    return PINNED[name]


def _ssl_entry(name: str) -> PinnedSSL:
    if name not in PINNED_SSL:
        raise TinysetError(f"unknown pinned SSL teacher {name!r}; known: {', '.join(PINNED_SSL)}")
    return PINNED_SSL[name]


def retrain_command(name: str) -> str:
    return f"python benchmarks/pinned.py {name} --data-root ../shared/data --retrain"


def checked_meta(name: str) -> dict:
    """The pinned teacher's YAML, after checking its file's sha256 against it."""
    st, meta_path = paths(name)
    meta = yaml.safe_load(meta_path.read_text())
    digest = sha256_file(st)
    if digest != meta["sha256"]:
        raise TinysetError(f"pinned teacher {st} has sha256 {digest[:16]}…, its YAML says {meta['sha256'][:16]}…; "
                           f"restore it from git or retrain it: {retrain_command(name)}")
    return meta


def kept_within_tolerance(name: str, acc: float, what: str) -> bool:
    """After a retrain: True (pinned files kept) when a pinned teacher exists and ``acc`` is within
    ``TOLERANCE`` of it; an error when it is further; False when nothing is pinned yet."""
    st, meta_path = paths(name)
    if not (st.exists() and meta_path.exists()):
        return False
    old = yaml.safe_load(meta_path.read_text())
    if abs(acc - old["test_accuracy"]) > TOLERANCE:
        raise TinysetError(f"retrained {name}: {acc:.2f}% {what}, the pinned one has {old['test_accuracy']:.2f}% "
                           f"(more than {TOLERANCE} point apart); the pinned teacher is kept")
    log.info("retrained %s: %.2f%% vs pinned %.2f%% (within %.1f point); pinned files kept", name, acc,
             old["test_accuracy"], TOLERANCE)
    return True


def load_pinned(name: str, ds, device="cpu", retrain: bool = False, cache: str | None = None) -> Teacher:
    """The committed teacher ``name`` for ``ds`` (sha256 checked), or with ``retrain`` a fresh one
    trained from the recipe and compared with the pinned accuracy."""
    entry = _entry(name)
    st, meta_path = paths(name)
    if retrain or not st.exists():
        return pin(name, ds, device, cache=cache, replace=retrain)
    meta = checked_meta(name)
    tcfg = dataclasses.replace(entry.teacher, checkpoint=str(st), cache_dir=cache)
    teacher = get_teacher(ds, tcfg, device, progress=False)
    teacher.reference.update({"pinned": name, "test_accuracy": meta["test_accuracy"], "recipe": meta["recipe"]})
    return teacher


def pin(name: str, ds, device="cpu", cache: str | None = None, replace: bool = False) -> Teacher:
    """Train ``name`` from its recipe (or take it from the teacher cache), then write the pinned files;
    an existing pinned teacher is only replaced when the new accuracy is within ``TOLERANCE``."""
    entry = _entry(name)
    st, meta_path = paths(name)
    tcfg = dataclasses.replace(entry.teacher, cache_dir=cache or str(HERE / "cache"))
    if replace:  # a retrain must not reuse the cached weights it is meant to check
        tcfg = dataclasses.replace(tcfg, cache_dir=tempfile.mkdtemp(prefix=f"retrain-{name}-"))
    trained = get_teacher(ds, tcfg, device, progress=False)
    acc = float(trained.reference["test_accuracy"])
    if kept_within_tolerance(name, acc, "test accuracy"):
        return load_pinned(name, ds, device, cache=cache)
    TEACHERS.mkdir(parents=True, exist_ok=True)
    model, ckpt = load_model(trained.reference["path"], ds.info)
    save_model_safetensors(model, st, entry.teacher.model, ds.info, ckpt.get("meta"))
    recipe = {k: v for k, v in to_dict(entry.teacher).items() if k not in ("checkpoint", "cache_dir", "pretrained",
                                                                          "head_classes", "trust_checkpoint", "extra")}
    meta = {"name": name, "about": entry.about, "dataset": entry.dataset, "image_size": entry.image_size,
            "model": entry.teacher.model, "recipe": recipe, "test_accuracy": round(acc, 2),
            "class_names": list(ds.info.class_names), "file": st.name, "sha256": sha256_file(st),
            "retrain": retrain_command(name)}
    atomic_write_text(meta_path, yaml.safe_dump(meta, sort_keys=False))
    log.info("pinned %s: %.2f%% -> %s", name, acc, st)
    return load_pinned(name, ds, device, cache=cache)


def ssl_probe_classifier(encoder, ds, spec: str, probe_steps: int, device="cpu"):
    """(classifier, test accuracy): the encoder with a linear probe fitted on ``ds.train``'s frozen
    features (standardisation folded into the head), scored on ``ds.test``."""
    import torch

    from tinyset.eval.transfer import TransferConfig, _features, fit_probe
    from tinyset.models.encoder import _head_owner

    ftr = _features(encoder, ds.train, device)
    clf, mu, sd = fit_probe(ftr, ds.train.targets, ds.info.num_classes, TransferConfig(probe_steps=probe_steps), 0)
    model = get_model(spec, ds.info)
    missing, unexpected = model.load_state_dict(encoder.cpu().state_dict(), strict=False)
    owner, hname = _head_owner(model)
    if unexpected or any(not k.endswith((f"{hname}.weight", f"{hname}.bias")) for k in missing):
        raise TinysetError(f"pinned SSL: the encoder does not fit {spec} (missing {missing}, unexpected {unexpected})")
    head = getattr(owner, hname)
    with torch.no_grad():  # clf((f - mu) / sd) == (W / sd) f + (b - (W / sd) mu)
        w = clf.weight / sd
        head.weight.copy_(w)
        head.bias.copy_(clf.bias - w @ mu)
    model.eval()
    correct = 0
    with torch.no_grad():
        for idx in torch.arange(len(ds.test)).split(500):
            x, y = ds.test.get_batch(idx)
            correct += int((model(x).argmax(1) == y).sum())
    return model, 100.0 * correct / len(ds.test)


def load_pinned_ssl(name: str, ds, device="cpu", retrain: bool = False, cache: str | None = None) -> SSLTeacher:
    """The committed SSL teacher ``name`` for its source ``ds`` (sha256 checked) as an encoder, or with
    ``retrain`` a fresh one trained from the recipe and compared with the pinned probe accuracy."""
    entry = _ssl_entry(name)
    st, meta_path = paths(name)
    if retrain or not st.exists():
        return pin_ssl(name, ds, device, cache=cache, replace=retrain)
    meta = checked_meta(name)
    teacher = get_ssl_teacher(ds, SSLConfig(checkpoint=str(st), model=entry.ssl.model, cache_dir=cache), device, progress=False)
    teacher.reference.update({"pinned": name, "probe_accuracy": meta["test_accuracy"], "recipe": meta["recipe"],
                              "ssl": entry.ssl.method, "epochs": entry.ssl.epochs})
    return teacher


def pin_ssl(name: str, ds, device="cpu", cache: str | None = None, replace: bool = False) -> SSLTeacher:
    """Train the SSL teacher ``name`` from its recipe (or take it from the SSL cache), fit its linear
    probe, then write the pinned files; an existing pinned teacher is only replaced when the new probe
    accuracy is within ``TOLERANCE``."""
    entry = _ssl_entry(name)
    st, meta_path = paths(name)
    scfg = dataclasses.replace(entry.ssl, cache_dir=cache or str(HERE / "cache"))
    if replace:
        scfg = dataclasses.replace(scfg, cache_dir=tempfile.mkdtemp(prefix=f"retrain-{name}-"))
    trained = get_ssl_teacher(ds, scfg, device, progress=False)
    model, acc = ssl_probe_classifier(trained.encoder, ds, entry.ssl.model, entry.probe_steps, device)
    if kept_within_tolerance(name, acc, "linear-probe accuracy"):
        return load_pinned_ssl(name, ds, device, cache=cache)
    TEACHERS.mkdir(parents=True, exist_ok=True)
    save_model_safetensors(model, st, entry.ssl.model, ds.info, {"ssl": entry.ssl.method, "final_loss": trained.reference.get("final_loss")})
    recipe = {k: v for k, v in dataclasses.asdict(entry.ssl).items() if k not in ("checkpoint", "cache_dir")}
    meta = {"name": name, "about": entry.about, "dataset": entry.source, "image_size": ds.info.image_size,
            "model": entry.ssl.model, "recipe": recipe, "test_accuracy": round(acc, 2),
            "accuracy": f"linear probe ({entry.probe_steps} full-batch Adam steps on standardised frozen features, "
                        f"folded into the head) on {len(ds.test)} test images",
            "final_loss": trained.reference.get("final_loss"), "class_names": list(ds.info.class_names), "file": st.name,
            "sha256": sha256_file(st), "retrain": retrain_command(name)}
    atomic_write_text(meta_path, yaml.safe_dump(meta, sort_keys=False))
    log.info("pinned %s: %.2f%% linear probe -> %s", name, acc, st)
    return load_pinned_ssl(name, ds, device, cache=cache)


def dataset_and_teacher(args, device="cpu", cache: str | None = None):
    """The dataset a benchmark's ``--pinned-teacher`` was trained on (from ``--data-root``) and that teacher."""
    cfg = _entry(args.pinned_teacher).data_config(args.data_root)
    ds = load_dataset(cfg.dataset, cfg)
    return ds, load_pinned(args.pinned_teacher, ds, device, retrain=args.retrain_teacher, cache=cache)


def add_teacher_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--pinned-teacher", default=default, choices=list(PINNED), help="committed teacher (benchmarks/teachers/)")
    p.add_argument("--retrain-teacher", action="store_true",
                   help="retrain the pinned teacher from its recipe and check its accuracy is within a point")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=[*PINNED, *PINNED_SSL])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.name in PINNED_SSL:
        ds = PINNED_SSL[args.name].dataset(args.data_root)
        t = load_pinned_ssl(args.name, ds, args.device, retrain=args.retrain, cache=args.cache)
        print(f"{args.name}: {t.reference['probe_accuracy']:.2f}% linear-probe accuracy ({paths(args.name)[0]})")
        return
    entry = _entry(args.name)
    ds = load_dataset(entry.data_config(args.data_root).dataset, entry.data_config(args.data_root))
    t = load_pinned(args.name, ds, args.device, retrain=args.retrain, cache=args.cache)
    print(f"{args.name}: {t.reference['test_accuracy']:.2f}% test accuracy ({paths(args.name)[0]})")


if __name__ == "__main__":
    main()

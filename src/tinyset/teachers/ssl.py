"""Self-supervised teachers: trained once without labels, cached by dataset + model + config hash,
checkpointed every epoch with the generator state so an interrupted run resumes to the same
weights; or any encoder checkpoint (a classifier's last linear layer is dropped: a supervised
teacher, or a pinned SSL encoder saved with its linear-probe head as ``.safetensors``)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..config import TeacherConfig
from ..data.base import Dataset, DatasetInfo, Split
from ..errors import TinysetError
from ..eval.schedules import get_schedule
from ..models import get_model, load_model, sha256_file
from ..models.checkpoint import atomic_torch_save
from ..utils.cache import cache_root, cached_dir
from ..utils.digest import folder_key
from ..utils.files import atomic_path
from ..utils.runlog import JsonlLog
from ..utils.seeding import generator
from ..models.encoder import encoder_from_model, feature_dim
from .registry import SSL_METHODS
from ..data.views import rotate

log = logging.getLogger(__name__)

RECIPE_VERSION = 1


@dataclass
class SSLConfig:
    method: str = "barlow_twins"
    model: str = "convnet:depth=3,width=32"  # 512-d features at 32px
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-4
    proj_dim: int = 1024
    lambd: float = 5e-3
    seed: int = 0
    checkpoint: str | None = None  # any encoder checkpoint instead of training
    cache_dir: str | None = None

    @classmethod
    def from_teacher_config(cls, tcfg: TeacherConfig, method: str = "barlow_twins", **over) -> "SSLConfig":
        """The user's ``teacher.*`` knobs that mean the same thing here (model, epochs, seed, ...)."""
        base = cls(method=method)
        d = {"model": tcfg.model if tcfg.model != "convnet3" else base.model, "epochs": tcfg.epochs,
             "seed": tcfg.seed, "checkpoint": tcfg.checkpoint, "cache_dir": tcfg.cache_dir}
        d.update(over)
        return cls(method=method, **{k: v for k, v in d.items() if v is not None})


@dataclass
class SSLTeacher:
    encoder: nn.Module  # frozen, eval mode, [0, 1] images -> [N, dim]
    dim: int
    reference: dict
    directory: Path


def ssl_key(cfg: SSLConfig, ds: Dataset, *, dataset_name: str | None = None) -> str:
    """The cache folder name of a trained SSL encoder (``dataset_name``: as ``teacher_key``)."""
    name = dataset_name or ds.info.identity
    knobs = {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint", "cache_dir")}
    ident = {"dataset": name, "n_train": len(ds.train), "shape": list(ds.info.shape), "ssl": knobs,
             "recipe": RECIPE_VERSION}
    return folder_key(name, cfg.method, ident)


def build_encoder(spec: str, info: DatasetInfo) -> nn.Module:
    return encoder_from_model(get_model(spec, info))


def get_ssl_teacher(ds: Dataset, cfg: SSLConfig, device="cpu", progress: bool = True) -> SSLTeacher:
    """A frozen encoder for ``ds``: the user's checkpoint, else the cached one, else train it."""
    device = torch.device(device)
    if cfg.checkpoint:
        path = Path(cfg.checkpoint)
        # a .safetensors file is a classifier (e.g. a pinned SSL teacher with its linear-probe head): not a pickle
        raw = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() and path.suffix != ".safetensors" else None
        if isinstance(raw, dict) and raw.get("encoder"):  # a tinyset SSL encoder (encoder.pt)
            enc = build_encoder(raw["model"], ds.info)
            enc.load_state_dict(raw["state_dict"])
            model_name = raw["model"]
        else:  # any classifier checkpoint: its last linear layer is dropped
            model, ckpt = load_model(cfg.checkpoint, ds.info, model_spec=cfg.model)
            enc, model_name = encoder_from_model(model), ckpt.get("model")
        sha = sha256_file(cfg.checkpoint)
        ref = {"source": "checkpoint", "path": str(Path(cfg.checkpoint).resolve()), "sha256": sha, "model": model_name}
        d = cache_root(cfg.cache_dir) / "user" / sha[:16]
    else:
        SSL_METHODS.get(cfg.method)  # unknown method: one-line error before any work
        keys = [ssl_key(cfg, ds), ssl_key(cfg, ds, dataset_name=ds.info.name)]
        d = cached_dir(cache_root(cfg.cache_dir) / "ssl_teachers", keys, ("encoder.pt", "last.pt"))
        final = d / "encoder.pt"
        if not final.exists():
            train_ssl(ds, cfg, d, device, progress)
        state = torch.load(final, map_location="cpu", weights_only=False)
        enc = build_encoder(cfg.model, ds.info)
        enc.load_state_dict(state["state_dict"])
        ref = {"source": "trained", "path": str(final), "sha256": sha256_file(final), "model": cfg.model,
               "ssl": cfg.method, "epochs": cfg.epochs, "seed": cfg.seed, "final_loss": state["meta"].get("final_loss")}
    enc = enc.to(device).eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    dim = feature_dim(enc, ds.info.shape)
    ref["dim"] = dim
    d.mkdir(parents=True, exist_ok=True)
    return SSLTeacher(enc, dim, ref, d)


def train_ssl(ds: Dataset, cfg: SSLConfig, directory: Path, device, progress: bool = True) -> nn.Module:
    """Train encoder + projector with the named objective; ``last.pt`` after every epoch."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    enc = build_encoder(cfg.model, ds.info)
    dim = feature_dim(enc, ds.info.shape)
    model = SSL_METHODS.get(cfg.method)(enc, dim, proj_dim=cfg.proj_dim, lambd=cfg.lambd).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, get_schedule("cosine", cfg.epochs))
    g = generator(cfg.seed)
    start, history = 0, []
    ckpt = directory / "last.pt"
    if ckpt.exists():
        st = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        g.set_state(st["generator"])
        start, history = st["epoch"], st["history"]
        log.info("ssl teacher: resumed from %s at epoch %d", ckpt, start)
    runlog = JsonlLog(directory / "log.jsonl")
    n = len(ds.train)
    if n < 2:
        raise TinysetError(f"self-supervised training needs at least 2 images, {ds.info.name} has {n}")
    bar = tqdm(range(start, cfg.epochs), desc=f"ssl {cfg.method} {cfg.model}", disable=not progress, leave=False,
               initial=start, total=cfg.epochs)
    for epoch in bar:
        model.train()
        t0, tot, count = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(n, generator=g).split(cfg.batch_size):
            if len(idx) < 2:  # batch norm of the embeddings needs two samples
                continue
            x, _ = ds.train.get_batch(idx)
            loss = model(x.to(device), g)
            if not torch.isfinite(loss):
                raise TinysetError(f"ssl teacher: loss became {float(loss)} at epoch {epoch}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot, count = tot + float(loss.detach()) * len(idx), count + len(idx)
        sched.step()
        rec = {"epoch": epoch + 1, "loss": tot / max(count, 1), "seconds": time.perf_counter() - t0}
        history.append(rec)
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                           "generator": g.get_state(), "epoch": epoch + 1, "history": history}, ckpt)
        runlog.write("ssl_teacher", **rec)
        bar.set_postfix(loss=f"{rec['loss']:.2f}")
    meta = {"config": asdict(cfg), "dataset": ds.info.name, "final_loss": history[-1]["loss"] if history else None,
            "history": history, "dim": dim}
    atomic_torch_save({"model": cfg.model, "encoder": True, "dataset_info": ds.info.to_dict(),
                       "state_dict": model.encoder.state_dict(), "meta": meta}, directory / "encoder.pt")
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    ckpt.unlink(missing_ok=True)
    log.info("ssl teacher: trained %s with %s -> %s", cfg.model, cfg.method, directory)
    return model.encoder


@torch.no_grad()
def encode(encoder: nn.Module, x: torch.Tensor, device, batch: int = 500) -> torch.Tensor:
    return torch.cat([encoder(c.to(device)).float().cpu() for c in x.split(batch)]) if len(x) else torch.empty(0)


@torch.no_grad()
def teacher_features(teacher: SSLTeacher, split: Split, name: str, views: tuple[int, ...] = (0,), device="cpu",
                     batch: int = 500) -> torch.Tensor:
    """[len(views), N, dim] features of every image of ``split`` under each rotation view (quarter
    turns), computed once and cached in the teacher's folder under ``name``."""
    path = teacher.directory / f"features-{name}-{len(split)}-v{''.join(map(str, views))}.safetensors"
    if path.exists():
        return load_file(str(path))["features"]
    out = torch.empty(len(views), len(split), teacher.dim)
    for idx in torch.arange(len(split)).split(batch):
        x, _ = split.get_batch(idx)
        for i, k in enumerate(views):
            out[i, idx] = teacher.encoder(rotate(x, k).to(device)).float().cpu()
    with atomic_path(path) as tmp:
        save_file({"features": out.contiguous()}, str(tmp))
    return out

"""tinyset: distil a large image dataset into a tiny synthetic one that trains models almost as well.

The short API (timm-style)::

    import tinyset
    tinyset.list_methods()                                  # ['e2d', 'herding', 'random', 'rded', 'sre2l']
    res = tinyset.distill("e2d", dataset="digits", ipc=10, out="runs/api", config="digits-demo")
    art = tinyset.load("runs/api")                          # checks format version and checksums
    loader = torch.utils.data.DataLoader(art.as_dataset(), batch_size=32, shuffle=True)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ._version import __version__

__all__ = ["__version__", "distill", "load", "load_artifact", "list_methods"]


def list_methods() -> list[str]:
    """Names of the registered distillation methods."""
    from .methods import METHODS

    return METHODS.names()


def load(path: str | Path, verify: bool = True):
    """Load an artifact (a run directory or the artifact itself); ``.as_dataset()`` gives a torch Dataset."""
    from .artifact import load_artifact

    return load_artifact(path, verify=verify)


def __getattr__(name: str):
    # ``tinyset.load_artifact``: the artifact reader under its own name, imported on first use so that
    # ``import tinyset`` stays light (the root imports no method, job or artifact code up front).
    if name == "load_artifact":
        from .artifact import load_artifact

        return load_artifact
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def distill(method: str = "e2d", dataset: str = "digits", ipc: int = 10, out: str | Path | None = None, *,
            config: str | None = None, overwrite: bool = False, progress: bool = True, **overrides: Any):
    """Distil ``dataset`` with ``method`` at ``ipc`` images per class into ``out`` and evaluate it.

    ``config`` is a YAML file or bundled preset (``"digits-demo"``); further keyword arguments override
    config sections, e.g. ``eval={"epochs": 40, "seeds": 1}``, ``method_args={"iterations": 50}``,
    ``evaluate=False``. Everything is validated before any work. Returns a ``DistillResult``
    (``.path``, ``.manifest``, ``.report``)."""
    from .config import RunConfig, apply_mapping, build_config
    from .jobs.distill import distill as _distill

    cfg = build_config(RunConfig, config)
    apply_mapping(cfg, {"method": method, "ipc": ipc, "data": {"dataset": dataset}, **overrides})
    out = Path(out) if out is not None else Path("runs") / f"{Path(dataset).name.replace(':', '_')}-{method}-ipc{ipc}"
    return _distill(cfg, out, overwrite=overwrite, progress=progress)

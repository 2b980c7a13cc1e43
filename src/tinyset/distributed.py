"""torch.distributed for tinyset, shaped like torchvision's references ``utils.init_distributed_mode``:
the same code runs under ``python`` (one process, every helper is a no-op) and under ``torchrun``
(RANK / WORLD_SIZE / LOCAL_RANK in the environment; gloo on CPU, NCCL on GPUs).

What is distributed and how:
- synthesis: units are dealt to ranks round-robin; each rank writes its finished units to the shared
  ``.<out>.partial/`` folder (atomically), rank 0 assembles the one artifact. Units are seeded by
  (seed, unit), so the artifact does not depend on the number of ranks.
- evaluation: the students (label modes x seeds x distilled/random) are dealt to ranks and the
  accuracies gathered on rank 0, which writes ``eval.json``.
- teacher training and ``tinyset kd``: DistributedDataParallel with a DistributedSampler."""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

from .errors import TinysetError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Ranks wait at barriers while others synthesise their units; at ImageNet scale that can take hours,
# far beyond torch's 30-minute default, so the timeout is long and settable.
DEFAULT_TIMEOUT_HOURS = 12.0


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise TinysetError(f"environment variable {name}={raw!r} is not an integer") from None


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun described (once; later calls return the same info).
    ``device`` picks the backend: NCCL for CUDA (each process on ``cuda:LOCAL_RANK``), gloo otherwise."""
    if dist.is_available() and dist.is_initialized():
        return info()
    if not launched_by_torchrun():
        return DistInfo()
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return DistInfo(rank, world, local)
    if not dist.is_available():
        raise TinysetError("this torch build has no torch.distributed; run without torchrun")
    use_cuda = torch.cuda.is_available() and device != "cpu" and not str(device).startswith("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local >= torch.cuda.device_count():  # NCCL cannot put two ranks on one GPU
            raise TinysetError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s); "
                               "use --nproc-per-node at most that, or --device cpu for gloo")
        torch.cuda.set_device(local)
    hours = float(os.environ.get("TINYSET_DIST_TIMEOUT_HOURS", DEFAULT_TIMEOUT_HOURS))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=hours))
    log.info("distributed: rank %d of %d (local %d), backend %s", rank, world, local, backend)
    return DistInfo(rank, world, local, backend)


def info() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This rank's share of ``items``, dealt round-robin so neighbouring (similar-cost) items spread."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    return list(items[rank::world_size])


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Elementwise sum over ranks (e.g. loss totals and sample counts for an epoch's mean)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

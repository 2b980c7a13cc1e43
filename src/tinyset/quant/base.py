"""What every quantizer is: an ``nn.Module`` whose forward is the fake-quantized value, with exact
integer ``encode``/``decode`` and an exact storage cost.

Shaped after ``torch.ao.quantization.FakeQuantize`` / ``_LearnableFakeQuantize``: learnable state
(clips, levels) are ``Parameter``s, granularity is one argument, and what gets stored is exactly the
integer codes plus that state. The forward value is *computed the same way* ``decode`` computes it
(same tensors, same operations), so ``decode(encode(x))`` equals ``forward(x)`` bit for bit; the
gradients come from a surrogate added as ``s - s.detach()``, which is exactly zero in value.

Granularity: ``tensor`` (one set of parameters for the whole set), ``channel`` (one per channel,
dim 1) or ``image`` (one per sample, dim 0).

Straight-through gradient to the data (``ste``, every quantizer): ``clipped`` (default) passes the
upstream gradient inside the clip range and 0 outside it; ``calibrated`` passes it everywhere, also
outside the clip, as the APoT reference's "calibrated gradients" do for weights. The gradients to
the quantizer's own parameters are the same under both.

Conventions a quantizer's config records (grid, ties, ste) default, when a stored config lacks
them, to what tinyset did before the key existed (``legacy_config``), so an artifact written then
decodes, and re-encodes, exactly as it did."""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import TinysetError
from ..registry import Registry
from .bitpack import packed_nbytes

QUANTIZERS: Registry[type["Quantizer"]] = Registry("quantizer")
GRANULARITIES = ("tensor", "channel", "image")
STE_MODES = ("clipped", "calibrated")
STATE_BYTES_PER_VALUE = 4  # quantizer state is stored as float32


def register_quantizer(name: str, doc: str | None = None):
    def deco(cls: type[Quantizer]) -> type[Quantizer]:
        cls.name = name
        return QUANTIZERS.register(name, doc)(cls)

    return deco


def group_shape(shape: tuple[int, ...] | torch.Size, granularity: str) -> tuple[int, ...]:
    """Broadcastable parameter shape for data of ``shape`` under ``granularity``."""
    shape = tuple(shape)
    if granularity == "tensor":
        return (1,) * len(shape)
    if len(shape) < 2:
        raise TinysetError(f"granularity {granularity!r} needs data with at least 2 dims, got shape {list(shape)}")
    if granularity == "channel":
        return (1, shape[1]) + (1,) * (len(shape) - 2)
    if granularity == "image":
        return (shape[0],) + (1,) * (len(shape) - 1)
    raise TinysetError(f"unknown granularity {granularity!r}; choose {', '.join(GRANULARITIES)}")


def num_groups(shape, granularity: str) -> int:
    return math.prod(group_shape(shape, granularity))


def per_group_reduce(x: torch.Tensor, granularity: str, fn) -> torch.Tensor:
    """Apply ``fn(rows [G, M]) -> [G]`` per group and return it in the broadcastable group shape."""
    gs = group_shape(x.shape, granularity)
    if granularity == "tensor":
        rows = x.reshape(1, -1)
    elif granularity == "channel":
        rows = x.transpose(0, 1).reshape(x.shape[1], -1)
    else:
        rows = x.reshape(x.shape[0], -1)
    return fn(rows).reshape(gs)


def check_bits(bits: Any, lo: int = 1, hi: int = 8, what: str = "quantizer") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise TinysetError(f"{what} bits must be an integer from {lo} to {hi}, got {bits!r}")
    return bits


def check_choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise TinysetError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def round_ties(v: torch.Tensor, up: torch.Tensor, ties: str) -> torch.Tensor:
    """Round ``v`` to integers. ``ties="even"``: ``torch.round`` (half to even). ``ties="away"``: an
    exact half goes up where ``up`` is true and down elsewhere; with ``up = x >= 0`` that breaks
    ties on |x|, away from zero (a symmetric grid gives ``q(-x) = -q(x)``). Ties are detected
    exactly (``v - floor(v) == 0.5``), not with ``floor(v + 0.5)``, which misrounds just below a half."""
    r = torch.round(v)
    if ties == "even":
        return r
    fl = torch.floor(v)
    return torch.where((v - fl) == 0.5, torch.where(up, fl + 1, fl), r)


class Quantizer(nn.Module):
    """Base class. Subclasses set ``params_per_group`` and implement ``_init_params``, ``encode``,
    ``decode`` and ``_surrogate`` (the expression whose autograd gradient is the training gradient)."""

    name: ClassVar[str] = ""
    max_bits: ClassVar[int] = 8

    def __init__(self, bits: int, granularity: str = "tensor", signed: bool = False, ste: str = "clipped"):
        super().__init__()
        self.bits = check_bits(bits, 1, self.max_bits, self.name or "quantizer")
        if granularity not in GRANULARITIES:
            raise TinysetError(f"unknown granularity {granularity!r}; choose {', '.join(GRANULARITIES)}")
        self.granularity = granularity
        self.signed = bool(signed)
        self.ste = check_choice(ste, STE_MODES, f"{self.name or 'quantizer'} ste")
        self.data_shape: tuple[int, ...] | None = None

    # -- configuration and state ------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything needed (with ``state()``) to rebuild the quantizer: JSON-serialisable."""
        return {"name": self.name, "bits": self.bits, "granularity": self.granularity, "signed": self.signed,
                "ste": self.ste}

    @classmethod
    def legacy_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with the keys it lacks set to what tinyset did before they were recorded (a
        config stored by an older tinyset then rebuilds the quantizer it was written with)."""
        return {"ste": "clipped", **config}

    def state_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters()]

    def state(self) -> dict[str, torch.Tensor]:
        """The learnable state as float32 tensors: exactly what is stored beside the codes."""
        self._require_init()
        return {n: p.detach().float().cpu().contiguous() for n, p in self.named_parameters()}

    def load_state(self, state: dict[str, torch.Tensor], data_shape) -> "Quantizer":
        self.data_shape = tuple(data_shape)
        for n in self.param_names():
            if n not in state:
                raise TinysetError(f"quantizer {self.name!r} state lacks {n!r} (has {', '.join(state)})")
            setattr(self, n, nn.Parameter(state[n].float().clone()))
        return self

    def param_names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def params_per_group(self) -> int:
        return len(self.param_names())

    def state_numel(self, data_shape) -> int:
        return num_groups(data_shape, self.granularity) * self.params_per_group()

    def state_shapes(self, data_shape) -> dict[str, tuple[int, ...]]:
        """Shape of every stored state tensor for data of ``data_shape`` (without initialising)."""
        return {n: group_shape(data_shape, self.granularity) for n in self.param_names()}

    def cost_bytes(self, data_shape) -> int:
        """Exact stored bytes for data of ``data_shape``: bit-packed codes plus float32 state."""
        numel = math.prod(data_shape)
        return packed_nbytes(int(numel), self.bits) + STATE_BYTES_PER_VALUE * self.state_numel(data_shape)

    # -- calibration ------------------------------------------------------------------------
    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> "Quantizer":
        """Initialise the learnable state from data ``x`` (the shape it will quantize)."""
        self.data_shape = tuple(x.shape)
        for n, t in self._init_params(x.detach().float()).items():
            setattr(self, n, nn.Parameter(t.float().contiguous().to(x.device)))
        return self

    def _init_params(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _require_init(self) -> None:
        if self.data_shape is None:
            raise TinysetError(f"quantizer {self.name!r} is not initialised; call init_from(data) first")

    # -- the three views of one computation -------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Integer codes in [0, 2**bits), int64, shaped like ``x``."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _surrogate(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._require_init()
        with torch.no_grad():
            q = self.decode(self.encode(x))
        if self.ste == "calibrated":
            # the parameters' gradients from the surrogate at a constant x; the data's is 1 everywhere
            s = self._surrogate(x.detach())
            return q + (s - s.detach()) + (x - x.detach())
        s = self._surrogate(x)
        # s - s.detach() is exactly 0.0 for finite s, so the value is q bit for bit and the
        # gradient (to x and to the quantizer's parameters) is the surrogate's.
        return q + (s - s.detach())


def build_quantizer(name: str, bits: int, granularity: str = "tensor", signed: bool | None = None, **kwargs) -> Quantizer:
    """A new quantizer; options left ``None`` (``grid``, ``ste``, ``ties``, ...) take the quantizer's
    defaults."""
    cls = QUANTIZERS.get(name)
    if signed is None:
        signed = cls.default_signed if hasattr(cls, "default_signed") else False
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return cls(bits=bits, granularity=granularity, signed=signed, **kwargs)
    except TypeError as e:
        raise TinysetError(f"bad arguments for quantizer {name!r}: {e}") from None


def quantizer_from_config(config: dict[str, Any], state: dict[str, torch.Tensor], data_shape) -> Quantizer:
    """Rebuild a quantizer from ``config()`` and ``state()`` (what an artifact stores). Keys an
    older tinyset did not record take the behaviour it had (``Quantizer.legacy_config``)."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if not name:
        raise TinysetError("quantizer config has no name")
    cfg = QUANTIZERS.get(name).legacy_config(cfg)
    return build_quantizer(name, **cfg).load_state(state, data_shape)

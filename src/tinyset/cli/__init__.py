"""The ``tinyset`` command (console script ``tinyset = "tinyset.cli:main"``, ``python -m tinyset``).

``main``: the parser and the run commands (distill, teacher, eval, kd, export, import, report,
info, listings); ``quant``: the bit commands beside them (compress, budget, ``--budget``). Only
this package prints; the library logs."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]

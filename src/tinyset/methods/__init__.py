"""Distillation methods, one module each, registered by name (``tinyset methods`` lists them)."""
from . import dm, e2d, herding, krr_st, random_subset, rded, sre2l, ssdd  # noqa: F401  (registration)
from .base import METHODS, Method, MethodContext, Unit, UnitResult, build_method, register_method

__all__ = ["METHODS", "Method", "MethodContext", "Unit", "UnitResult", "build_method", "register_method"]

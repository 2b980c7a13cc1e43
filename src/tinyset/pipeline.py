"""Deprecated alias of ``tinyset.jobs.distill`` (moved when the package was split into layers; kept for one release)."""
from ._compat import moved

moved(__name__, "tinyset.jobs.distill")

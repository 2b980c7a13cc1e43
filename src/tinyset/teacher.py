"""Deprecated alias of ``tinyset.teachers.supervised`` (moved when the package was split into layers; kept for one release)."""
from ._compat import moved

moved(__name__, "tinyset.teachers.supervised")

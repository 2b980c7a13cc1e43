"""Deprecated alias of ``tinyset.teachers.supervised`` (moved when the package was split into layers; kept for one release).

``import tinyset.teacher`` still works and gives the very module ``tinyset.teachers.supervised`` (so every name,
private ones included, and monkeypatching through this path behave as before), with a
DeprecationWarning."""
import sys
import warnings

from .teachers import supervised as _moved

warnings.warn("tinyset.teacher is deprecated and will be removed in the next release; "
              "import tinyset.teachers.supervised instead", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved

"""Deprecated alias of ``tinyset.jobs.validate`` (moved when the package was split into layers; kept for one release).

``import tinyset.validate`` still works and gives the very module ``tinyset.jobs.validate`` (so every name,
private ones included, and monkeypatching through this path behave as before), with a
DeprecationWarning."""
import sys
import warnings

from .jobs import validate as _moved

warnings.warn("tinyset.validate is deprecated and will be removed in the next release; "
              "import tinyset.jobs.validate instead", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved

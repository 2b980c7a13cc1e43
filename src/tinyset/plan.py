"""Deprecated alias of ``tinyset.jobs.plan`` (moved when the package was split into layers; kept for one release).

``import tinyset.plan`` still works and gives the very module ``tinyset.jobs.plan`` (so every name,
private ones included, and monkeypatching through this path behave as before), with a
DeprecationWarning."""
import sys
import warnings

from .jobs import plan as _moved

warnings.warn("tinyset.plan is deprecated and will be removed in the next release; "
              "import tinyset.jobs.plan instead", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved

"""Deprecated alias of ``tinyset.jobs.budget`` (moved when the package was split into layers; kept for one release).

``import tinyset.budget`` still works and gives the very module ``tinyset.jobs.budget`` (so every name,
private ones included, and monkeypatching through this path behave as before), with a
DeprecationWarning."""
import sys
import warnings

from .jobs import budget as _moved

warnings.warn("tinyset.budget is deprecated and will be removed in the next release; "
              "import tinyset.jobs.budget instead", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved

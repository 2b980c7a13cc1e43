"""Deprecated alias of ``tinyset.jobs.compress`` (moved when the package was split into layers; kept for one release).

``import tinyset.compress`` still works and gives the very module ``tinyset.jobs.compress`` (so every name,
private ones included, and monkeypatching through this path behave as before), with a
DeprecationWarning."""
import sys
import warnings

from .jobs import compress as _moved

warnings.warn("tinyset.compress is deprecated and will be removed in the next release; "
              "import tinyset.jobs.compress instead", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved

"""Deprecated alias of ``tinyset.jobs.distill`` (moved when the package was split into layers; kept for one release).

``import tinyset.pipeline`` still works and gives the very module ``tinyset.jobs.distill`` (so every name,
private ones included, and monkeypatching through this path behave as before), with a
DeprecationWarning."""
import sys
import warnings

from .jobs import distill as _moved

warnings.warn("tinyset.pipeline is deprecated and will be removed in the next release; "
              "import tinyset.jobs.distill instead", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved

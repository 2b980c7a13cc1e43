"""Deprecated alias of ``tinyset.jobs.kd`` (moved when the package was split into layers; kept for one release).

``import tinyset.kd_run`` still works and gives the very module ``tinyset.jobs.kd`` (so every name,
private ones included, and monkeypatching through this path behave as before), with a
DeprecationWarning."""
import sys
import warnings

from .jobs import kd as _moved

warnings.warn("tinyset.kd_run is deprecated and will be removed in the next release; "
              "import tinyset.jobs.kd instead", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved

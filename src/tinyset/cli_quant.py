"""Deprecated alias of ``tinyset.cli.quant`` (moved when the package was split into layers; kept for one release).

``import tinyset.cli_quant`` still works and gives the very module ``tinyset.cli.quant`` (so every name,
private ones included, and monkeypatching through this path behave as before), with a
DeprecationWarning."""
import sys
import warnings

from .cli import quant as _moved

warnings.warn("tinyset.cli_quant is deprecated and will be removed in the next release; "
              "import tinyset.cli.quant instead", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved

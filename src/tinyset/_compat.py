"""The old module paths, kept for one release after the package was split into layers: ``moved``
makes ``import tinyset.<old>`` give the very module at its new home (every name, private ones
included, and monkeypatching through the old path behave as before) with a DeprecationWarning
attributed to the importing line."""
from __future__ import annotations

import importlib
import sys
import warnings


def moved(old: str, new: str) -> None:
    module = importlib.import_module(new)
    # stacklevel 3: past this function and the shim's body to the import (importlib's frames are skipped)
    warnings.warn(f"{old} is deprecated and will be removed in the next release; import {new} instead",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = module

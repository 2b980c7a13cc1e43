"""The one place the version lives (pyproject.toml reads it). A leaf: modules that need the
version import it from here, never from the package root (which would import every method)."""
__version__ = "0.1.0"

"""tinyset: distil a large image dataset into a tiny synthetic one that trains models almost as well."""
__version__ = "0.1.0"

"""cove's version, importable from every layer without loading the Python API."""

__version__ = "0.1.0"

"""cove: declarative microVMs on any Linux host."""

__version__ = "0.1.0"

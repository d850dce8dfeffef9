"""kmdb: import KISSmetrics Data Export dumps into MySQL or SQLite."""

__version__ = "0.1.0"

"""The package version (one place; ``mtfap --version``, model cards and index databases)."""

__version__ = "0.1.0"

"""mtfap: multi-task facial attribute prediction with structured heads (MTFAP)."""

__version__ = "0.1.0"

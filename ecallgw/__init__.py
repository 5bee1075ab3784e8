"""ecallgw: eCall signal gateway and triage daemon."""

__version__ = "0.1.0"
__all__ = ["__version__"]

"""Winnow: one self-hosted API over local and commercial LLMs, and a synthetic-data generator."""

__version__ = "0.1.0"
__all__ = ["__version__"]

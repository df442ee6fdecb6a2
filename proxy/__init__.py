"""proxy."""

__all__ = ()

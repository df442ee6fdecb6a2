"""sessionstore."""

__all__ = ()

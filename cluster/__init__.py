"""cluster."""

__all__ = ()

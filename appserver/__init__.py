"""appserver."""

__all__ = ()

"""Errors shared across the package's parts."""

from __future__ import annotations


class StartupError(RuntimeError):
    """A long-running command cannot start (schema not current, a listener refused, ARI credentials wrong): the
    message says what to fix; `securelink` prints it and exits non-zero."""

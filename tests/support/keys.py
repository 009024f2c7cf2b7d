"""The master key every test uses: fixed, so a derived device secret or key is the same in every run."""

from __future__ import annotations

MASTER = bytes(range(32))

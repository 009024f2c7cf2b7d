"""One line of `securelink doctor`'s report: what was checked, whether it passed, and how to fix it when not.

Its own module so that every group of checks can build lines without importing the runner (`doctor/__init__`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

UNEXPECTED_FIX: Final = "not a known misconfiguration: run `securelink doctor` again; if it stays, report this line"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warn: bool = False  # not ok, but nothing is broken yet: reported, does not fail `doctor`

    @property
    def passed(self) -> bool:
        return self.ok or self.warn

    def line(self) -> str:
        mark = "ok  " if self.ok else "warn" if self.warn else "FAIL"
        fix = f"\n        fix: {self.fix}" if not self.ok and self.fix else ""
        return f"[{mark}] {self.name}: {self.detail}{fix}"

"""`python3 -m asterisk_securelink.config README.md`: rewrite the configuration table between the README's markers
from the sections' field metadata (`config.reference`)."""

from __future__ import annotations

import sys
from pathlib import Path

from asterisk_securelink.config.reference import rewrite_readme


def main(argv: list[str]) -> int:
    for name in argv or ["README.md"]:
        path = Path(name)
        path.write_text(rewrite_readme(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`core.ascii`: every case-insensitive comparison is ASCII-only (SLK1.md 1.1 revision 2: no Unicode case folding,
the long s is no `s`). And no module of the functional core folds case with `str.lower`/`upper`/`casefold`."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import asterisk_securelink
from asterisk_securelink.core.ascii import ascii_casefold_equal, ascii_lower, ascii_upper

CORE = Path(asterisk_securelink.__file__).parent / "core"
# characters whose Unicode case mapping lands on ASCII letters: the ones an attacker would try
FOLDING = ["\u017f", "\u0131", "\u212a", "\u0130", "\u00df", "\ufb00", "\ufb06", "\u1e9e", "\u212b"]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("SLK1", "slk1", True), ("securelink", "SecureLink", True), ("", "", True), ("a", "ab", False),
     ("\u017flk1", "slk1", False), ("\u017flk1", "SLK1", False), ("prov\u0131sion", "provision", False),
     ("securelin\u212a", "securelink", False), ("\u0130", "i", False), ("stra\u00dfe", "STRASSE", False),
     ("\u00e9", "\u00c9", False), ("\u017f", "\u017f", True)],
)  # fmt: skip
def test_ascii_casefold_equal(a: str, b: str, same: bool) -> None:
    assert ascii_casefold_equal(a, b) is same
    assert ascii_casefold_equal(b, a) is same


def test_the_unicode_methods_would_have_folded_these() -> None:
    # why the helpers exist: each of these is equal under str.upper/lower/casefold
    assert "\u017flk1".upper() == "SLK1" and "prov\u0131sion".upper() == "PROVISION"
    assert "securelin\u212a".lower() == "securelink" and "\u017f".casefold() == "s"


@given(st.text(alphabet=string.printable))
def test_on_ascii_text_they_are_the_str_methods(text: str) -> None:
    assert ascii_lower(text) == text.lower() and ascii_upper(text) == text.upper()


@given(st.text())
def test_only_ascii_letters_change(text: str) -> None:
    for out in (ascii_lower(text), ascii_upper(text)):
        assert len(out) == len(text)
        for before, after in zip(text, out, strict=True):
            if before not in string.ascii_letters:
                assert after == before
            else:
                assert after.lower() == before.lower() and after in string.ascii_letters


@given(st.text(alphabet=st.sampled_from([*string.ascii_letters, *FOLDING])), st.data())
def test_casefold_equal_never_matches_a_folding_character_with_an_ascii_one(text: str, data: st.DataObject) -> None:
    other = "".join(data.draw(st.sampled_from([c, c.swapcase()])) if c.isascii() else c for c in text)
    assert ascii_casefold_equal(text, other)  # any ASCII case of the same text
    ascii_only = "".join(c if c.isascii() else "s" for c in text)
    assert ascii_casefold_equal(text, ascii_only) is text.isascii()


def test_no_module_of_the_core_folds_case_by_unicode() -> None:
    offences = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"lower", "upper", "casefold", "swapcase", "title", "capitalize"}
            ):
                offences.append(f"{path.name}:{node.lineno}: .{node.func.attr}()")
    assert offences == [], "use core.ascii (ascii_lower / ascii_upper / ascii_casefold_equal):\n" + "\n".join(offences)

"""ASCII-only case (`core/ascii.py`): only `A`-`Z` and `a`-`z` change, so no non-ASCII character ever compares
equal to an ASCII one (DEVICE-API.md revision 2; SLK1.md revision 2: the long s is not `s`)."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink.core.ascii import ascii_lower, ascii_upper

FOLDING = (
    "\u017f\u0131\u212a\u0130\u00df\uff33\u212b"  # long s, dotless i, Kelvin, dotted I, sharp s, fullwidth S, angstrom
)


def test_unicode_folds_these_and_the_ascii_helpers_do_not() -> None:
    assert "\u017f".upper() == "S" and "\u0131".upper() == "I" and "\u212a".lower() == "k"  # why the helpers exist
    assert ascii_upper(FOLDING) == FOLDING and ascii_lower(FOLDING) == FOLDING
    assert ascii_upper("\u017flk1") != "SLK1" and ascii_lower("SL\u212a1") != "slk1"
    assert (ascii_upper("sLk1"), ascii_lower("SLK1"), ascii_upper("fak5bft4")) == ("SLK1", "slk1", "FAK5BFT4")


@given(st.text())
def test_only_ascii_letters_change(text: str) -> None:
    for convert, source, target in ((ascii_upper, string.ascii_lowercase, string.ascii_uppercase),
                                    (ascii_lower, string.ascii_uppercase, string.ascii_lowercase)):  # fmt: skip
        out = convert(text)
        assert len(out) == len(text)
        for before, after in zip(text, out, strict=True):
            assert after == (target[source.index(before)] if before in source else before)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_on_ascii_text_they_are_str_upper_and_lower(text: str) -> None:
    assert ascii_upper(text) == text.upper() and ascii_lower(text) == text.lower()


@given(st.text(alphabet=string.ascii_letters + string.digits, min_size=1), st.data())
def test_ascii_case_flips_compare_equal_and_a_non_ascii_stand_in_never_does(word: str, data: st.DataObject) -> None:
    flipped = "".join(c.swapcase() if data.draw(st.booleans()) else c for c in word)
    assert ascii_lower(flipped) == ascii_lower(word) and ascii_upper(flipped) == ascii_upper(word)
    at = data.draw(st.integers(0, len(word) - 1))
    stand_in = data.draw(st.sampled_from(FOLDING) | st.characters(min_codepoint=0x80, exclude_categories=("Cs",)))
    other = word[:at] + stand_in + word[at + 1 :]
    assert ascii_lower(other) != ascii_lower(word) and ascii_upper(other) != ascii_upper(word)

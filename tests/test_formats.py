from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink.core.formats import FormatError, NumberFormat


@pytest.mark.parametrize(
    ("pattern", "size"),
    [("XXXXXXXXXX", 10**10), ("+1NXXNXXXXXX", 8 * 8 * 10**8), ("555XXXXXXX", 10**7), ("9ZXXXXXXXX", 9 * 10**8)],
)
def test_size(pattern: str, size: int) -> None:
    assert NumberFormat(pattern).size == size


def test_too_small_is_refused_naming_its_size() -> None:
    with pytest.raises(FormatError, match="100000 keys"):
        NumberFormat("55512XXXXX")


def test_weak_is_allowed_with_a_warning_naming_bits() -> None:
    fmt = NumberFormat("555XXXXXXX")
    assert fmt.warning is not None
    assert f"{math.log2(10**7):.1f} bits" in fmt.warning
    assert NumberFormat("XXXXXXXXXX").warning is None


@pytest.mark.parametrize(
    "pattern", ["", "+", "XXXXXXXXx", "XXXXXXX-XXX", "++XXXXXXXX", "XXXXXXX+XX", "XXXXXXX٣XX", "X" * 21]
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(FormatError):
        NumberFormat(pattern)


def test_render_fills_right_to_left() -> None:
    fmt = NumberFormat("NXXXXXXX")  # 8 * 10^7
    assert fmt.render(0) == "20000000"
    assert fmt.render(1) == "20000001"
    assert fmt.render(10**7) == "30000000"
    assert fmt.render(fmt.size - 1) == "99999999"
    with pytest.raises(FormatError):
        fmt.render(fmt.size)


# seven or more variable positions (>= 8^7 > 10^6 keys, so never refused) mixed with up to six literal digits
patterns = st.tuples(
    st.lists(st.sampled_from("XNZ"), min_size=7, max_size=9),
    st.lists(st.sampled_from("0123456789"), max_size=6),
).flatmap(lambda parts: st.permutations(parts[0] + parts[1]).map("".join))


@given(pattern=patterns, plus=st.booleans(), data=st.data())
def test_render_is_a_bijection_onto_matching_numbers(pattern: str, plus: bool, data: st.DataObject) -> None:
    fmt = NumberFormat(("+" if plus else "") + pattern)
    a = data.draw(st.integers(0, fmt.size - 1))
    b = data.draw(st.integers(0, fmt.size - 1))
    ra, rb = fmt.render(a), fmt.render(b)
    assert len(ra) == len(fmt.pattern)
    assert ra.startswith("+") == plus
    assert fmt.matches(ra.lstrip("+"))
    assert (ra == rb) == (a == b)
    # literals are copied where they stand
    for c, p in zip(ra.lstrip("+"), pattern, strict=True):
        if p.isdigit():
            assert c == p
        elif p == "N":
            assert c in "23456789"
        elif p == "Z":
            assert c in "123456789"


@pytest.mark.parametrize(
    ("pattern", "literal", "k"),
    [("+1NXXNXXXXXX", "1", 10), ("555XXXXXXX", "555", 7), ("XXXXXXXXXX", "", 10), ("9ZXXXXXXXX", "9", 9),
     ("+4420XXXXXXXX", "4420", 8), ("555X1XXXXXX", "555", 8)],
)  # fmt: skip
def test_literal_prefix_and_significant_part(pattern: str, literal: str, k: int) -> None:
    fmt = NumberFormat(pattern)
    assert (fmt.literal_prefix, fmt.significant_length) == (literal, k)
    key = fmt.render(fmt.size - 1)
    assert fmt.significant(key) == key[-k:]
    assert key.lstrip("+") == literal + fmt.significant(key)


def test_spec_examples_of_the_significant_part() -> None:
    assert NumberFormat("+1NXXNXXXXXX").significant("+12677638475") == "2677638475"
    assert NumberFormat("555XXXXXXX").significant("5551638475") == "1638475"


def test_a_space_above_2_64_is_refused() -> None:
    assert NumberFormat("X" * 19).size == 10**19 < 2**64  # the largest all-X format still fits
    with pytest.raises(FormatError, match="2\\^64"):
        NumberFormat("X" * 20)
    with pytest.raises(FormatError, match="2\\^64"):
        NumberFormat("+XXXX" + "Z" * 16)  # 10^4 * 9^16, just above 2^64
    assert NumberFormat("+" + "Z" * 20).size == 9**20 < 2**64
    assert NumberFormat("N" * 20).size == 8**20 <= 2**64


def test_at_most_20_digits_and_placeholders_the_plus_not_counted() -> None:
    """Revision 2 names the limit: 20 digits and placeholders, whatever the size of the space."""
    assert NumberFormat("5" * 10 + "X" * 10).size == 10**10  # 20: allowed
    assert NumberFormat("+" + "5" * 10 + "X" * 10).literal_prefix == "5" * 10  # the '+' is not counted
    with pytest.raises(FormatError, match="at most 20"):
        NumberFormat("5" * 11 + "X" * 10)  # 21, though 10^10 keys would be fine
    with pytest.raises(FormatError, match="at most 20"):
        NumberFormat("+" + "5" * 11 + "X" * 10)


@pytest.mark.parametrize("pattern", ["xxxxxxxxxx", "XXXXXXXXXx", "nxxnxxxxxx", "ZXXXXXXXXz", "\u1e8aXXXXXXXXX"])
def test_placeholders_are_upper_case_ascii_only(pattern: str) -> None:
    with pytest.raises(FormatError, match="invalid characters"):
        NumberFormat(pattern)

"""`asterisk.ari.wire`: orjson reads and writes what the standard library did, and falls back to it for the rest."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink.asterisk.ari import wire

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
)


@given(VALUES)
def test_a_frame_reads_as_the_standard_library_reads_it(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert wire.loads(text) == json.loads(text)
        assert wire.loads(text.encode()) == json.loads(text)


@given(VALUES)
def test_a_request_carries_the_same_json_value(value: Any) -> None:
    text = wire.dumps(value)
    assert json.loads(text) == value
    assert " " not in wire.dumps([1, {"a": 2}])


@pytest.mark.parametrize(
    ("text", "why"),
    [("18446744073709551616", "beyond 64 bits"), ('"\\ud800"', "a lone surrogate"), ('{"a": NaN}', "NaN")],
)
def test_what_orjson_refuses_is_read_by_the_standard_library(text: str, why: str) -> None:
    got, expected = wire.loads(text), json.loads(text)
    assert got == expected or (isinstance(got, dict) and math.isnan(got["a"]))


def test_what_orjson_cannot_write_is_written_by_the_standard_library() -> None:
    assert json.loads(wire.dumps({"n": 2**70})) == {"n": 2**70}
    assert json.loads(wire.dumps({1: "a"})) == {"1": "a"}  # a non-str key, as json.dumps writes it


@pytest.mark.parametrize("text", ["", "x", "{", '{"a":1}x', b"\xff"])
def test_what_is_not_json_is_a_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        wire.loads(text)

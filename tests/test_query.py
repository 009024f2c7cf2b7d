"""`core.query`: the one strict reader of a `securelink://` URI's query string (provisioning and enrollment)."""

from __future__ import annotations

import pytest

from asterisk_securelink.core.query import QueryError, parse_query
from asterisk_securelink.errors import InputError


def test_names_and_values_are_percent_decoded_and_a_plus_stays_a_plus() -> None:
    assert parse_query("a=1&b=%2B1%20555&c=+&%6Bey=") == {"a": "1", "b": "+1 555", "c": "+", "key": ""}


@pytest.mark.parametrize("query", ["a", "a=1&b", "a=%zz", "a=%4", "a=1&&b=2", "", "%=1"])
def test_what_is_not_name_equals_value_is_a_syntax_error(query: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(query)
    assert caught.value.problem == "syntax" and isinstance(caught.value, InputError | ValueError)


def test_empty_parts_are_skipped_only_when_asked() -> None:
    assert parse_query("a=1&&b=2&", skip_empty=True) == {"a": "1", "b": "2"}
    assert parse_query("", skip_empty=True) == {}


def test_an_escape_that_is_not_utf8_is_an_encoding_error() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query("a=%FF")
    assert (caught.value.problem, caught.value.name) == ("encoding", "")


def test_a_name_given_twice_is_refused_and_named() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query("a=1&b=2&a=1")
    assert (caught.value.problem, caught.value.name) == ("repeated", "a")


def test_only_keeps_the_names_asked_for_and_lets_the_others_repeat() -> None:
    assert parse_query("x=1&code=C&x=2&server=S", only=("server", "code")) == {"code": "C", "server": "S"}
    with pytest.raises(QueryError) as caught:
        parse_query("code=C&code=D", only=("server", "code"))
    assert (caught.value.problem, caught.value.name) == ("repeated", "code")


def test_an_ignored_name_is_still_read_strictly() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query("x=%FF&code=C", only=("code",))
    assert caught.value.problem == "encoding"


def test_the_first_problem_in_the_string_wins() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query("a=1&a=2&bad")
    assert caught.value.problem == "repeated"


def test_the_message_never_quotes_a_value() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query("secret=s3cr3t&secret=s3cr3t")
    assert "s3cr3t" not in str(caught.value)

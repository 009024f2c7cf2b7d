"""The device API's request signature: the spec's vectors (copied from docs/device-api.md), the header grammar, the
request-target rules and the order of checks."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.keys import MASTER

from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.deviceapi import signing
from asterisk_securelink.deviceapi.signing import (
    Authorization,
    BadTarget,
    Unauthorized,
    api_key,
    authorization,
    body_hash,
    canonical_string,
    check_target,
    parse_authorization,
    sign,
    verify,
)

SECRET = device_secret(MASTER, "dev-0001")
HOST = "pbx.example.com:8443"
TS = 1790000000
NONCE = "n0nce-0123456789"
CLAIM_BODY = b'{"presented":"+12677638475"}'

# docs/device-api.md "Vectors"
API_KEY = "5efb235afae96a59e65325bfc6d465a0b97079b28ada71bfd849a4eaceca0b1f"
EMPTY_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
GET_SIG = "Icl4IjO8On2CMSCcWE6LV77cdqEpKpvNK8o1YKz0wcM"
CLAIM_HASH = "e7c62c59f6f048633c2d75ea859dee45f7965f679e12a2b7763065889b24d21e"
CLAIM_SIG = "UPpW3C5aEiTd2OTGF2lClKHeqn5Xet2Rhc5MVYGGp5k"

GET_HEADER = f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"'


def test_vectors() -> None:
    assert SECRET.hex() == "65916420d17c4e99ba35027831e7e6e4414ec87741eefef53e5d27558cc1e082"
    assert api_key(SECRET).hex() == API_KEY
    assert body_hash(b"") == EMPTY_HASH
    assert body_hash(CLAIM_BODY) == CLAIM_HASH
    key = api_key(SECRET)
    get = canonical_string("GET", HOST, "/v1/device", str(TS), NONCE, EMPTY_HASH)
    assert get == f"GET\n{HOST}\n/v1/device\n{TS}\n{NONCE}\n{EMPTY_HASH}".encode()
    assert sign(key, get) == GET_SIG
    assert sign(key, canonical_string("POST", HOST, "/v1/calls/claim", str(TS), NONCE, CLAIM_HASH)) == CLAIM_SIG


def test_authorization_header_vector() -> None:
    header = authorization("dev-0001", api_key(SECRET), method="GET", host=HOST, target="/v1/device", body=b"",
                           ts=TS, nonce=NONCE)  # fmt: skip
    assert header == GET_HEADER
    assert parse_authorization(header) == Authorization("dev-0001", str(TS), NONCE, GET_SIG)


def test_the_docs_hold_the_vectors() -> None:
    text = (Path(__file__).parent.parent / "docs" / "device-api.md").read_text(encoding="utf-8")
    for value in (API_KEY, EMPTY_HASH, GET_SIG, CLAIM_HASH, CLAIM_SIG, HOST, str(TS), NONCE):
        assert value in text


def test_the_docs_hold_revision_2s_rules() -> None:
    """A fresh clone carries the contract's revision 2 in docs/device-api.md (not only in ../shared)."""
    text = " ".join((Path(__file__).parent.parent / "docs" / "device-api.md").read_text(encoding="utf-8").split())
    for rule in ("version 1 (revision 2)", "405 `method_not_allowed` with an `Allow` header",
                 "the TLS handshake must finish within 10 s of the connection", "closed after 30 s",
                 "origin-form (starts with `/`) and hold only visible ASCII (0x21\u20130x7E)",
                 "compare ASCII case-insensitively, and spaces or tabs may stand around `=` and `,`",
                 "gets 403 `rotated` on every route", "Answers `{\"key_id\", \"fork\"}` with the state now in force",
                 "dashes and spaces anywhere are removed", "no Unicode case folding"):  # fmt: skip
        assert rule in text, rule


@pytest.mark.parametrize(
    "header",
    [
        f'SLK1 sig="{GET_SIG}", nonce="{NONCE}", ts="{TS}", key_id="dev-0001"',  # any order
        f'SLK1 key_id="dev-0001",ts="{TS}",nonce="{NONCE}",sig="{GET_SIG}"',  # no spaces
        f'slk1  key_id = "dev-0001" ,  ts="{TS}",\tnonce="{NONCE}", SIG="{GET_SIG}"  ',  # RFC 9110 latitude
    ],
)
def test_header_variants_parse(header: str) -> None:
    assert parse_authorization(header) == Authorization("dev-0001", str(TS), NONCE, GET_SIG)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "SLK1",
        "SLK1 ",
        f'Bearer key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',
        f'SLK1key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}"',  # missing sig
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}", x="y"',  # a fifth parameter
        f'SLK1 key_id="dev-0001", key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # twice
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}", ts="{TS}"',
        f'SLK1 key_id=dev-0001, ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # unquoted
        f'SLK1 key_id=\'dev-0001\', ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # single quotes
        f'SLK1 key_id="dev\\-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # an escape
        f'SLK1 key_id="dev-0001" ts="{TS}" nonce="{NONCE}" sig="{GET_SIG}"',  # no commas
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}",',  # trailing comma
        f'SLK1 key_id="dev 0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # key_id charset
        f'SLK1 key_id="{"k" * 65}", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # key_id length
        f'SLK1 key_id="", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',
        f'SLK1 key_id="dev-0001", ts="179000000", nonce="{NONCE}", sig="{GET_SIG}"',  # 9 digits
        f'SLK1 key_id="dev-0001", ts="17900000000", nonce="{NONCE}", sig="{GET_SIG}"',  # 11 digits
        f'SLK1 key_id="dev-0001", ts="+790000000", nonce="{NONCE}", sig="{GET_SIG}"',
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="short-nonce-15ch", sig="{GET_SIG}"'.replace("15ch", "15c"),
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{"n" * 65}", sig="{GET_SIG}"',
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="n0nce.0123456789", sig="{GET_SIG}"',  # nonce charset
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}="',  # padded
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG[:-1]}"',  # short
        f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG[:-1]}+"',  # not base64url
        "SLK1 " + "x" * 600,
    ],
)
def test_malformed_headers_are_unauthorized(header: str) -> None:
    with pytest.raises(Unauthorized):
        parse_authorization(header)


def test_nonce_length_bounds() -> None:
    for n in (16, 64):
        h = f'SLK1 key_id="a", ts="{TS}", nonce="{"n" * n}", sig="{GET_SIG}"'
        assert parse_authorization(h).nonce == "n" * n
    with pytest.raises(Unauthorized):
        parse_authorization(f'SLK1 key_id="a", ts="{TS}", nonce="{"n" * 15}", sig="{GET_SIG}"')


@given(st.text(max_size=300))
def test_parser_never_raises_anything_else(text: str) -> None:
    try:
        parse_authorization(text)
    except Unauthorized:
        pass


# -- revision 2: the header's syntax is RFC 9110's, its case ASCII-only ------------------------------------------
PARAMS_TEXT = f'key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"'


@pytest.mark.parametrize(
    "header",
    [
        f"SLK1 \t{PARAMS_TEXT}",  # a tab after the scheme's space: RFC 9110 allows 1*SP there, no tab
        f"SLK1\t{PARAMS_TEXT}",  # a tab instead of the space
        f"SLK1\t {PARAMS_TEXT}",
        f"\u017flk1 {PARAMS_TEXT}",  # LATIN SMALL LETTER LONG S: str.upper() makes it S
        f"SL\u212a1 {PARAMS_TEXT}",  # KELVIN SIGN: str.lower() makes it k
        f"\uff33LK1 {PARAMS_TEXT}",  # FULLWIDTH S
        f"SLK1\u00a0{PARAMS_TEXT}",  # a no-break space
        f'SLK1 key_id="dev-0001", , ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # an empty list element
        f'SLK1 , key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # a leading empty element
        f"SLK1 {PARAMS_TEXT},",  # a trailing comma
        f"SLK1 {PARAMS_TEXT} , ",
        f'SLK1 \u212aey_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # a Kelvin-sign parameter name
        f'SLK1 key_id="dev-0001", t\u0455="{TS}", nonce="{NONCE}", sig="{GET_SIG}"',  # CYRILLIC DZE for s
    ],
)
def test_header_syntax_of_revision_2_refuses(header: str) -> None:
    """The first five were accepted before (`SLK1 \t`, `\u017flk1`: Unicode case folding, lstrip of a tab)."""
    with pytest.raises(Unauthorized):
        parse_authorization(header)


@pytest.mark.parametrize(
    "header",
    [
        f"slk1 {PARAMS_TEXT}",
        f"sLk1   {PARAMS_TEXT}",  # 1*SP
        f'SLK1 KEY_ID\t=\t"dev-0001"\t,\tTs ="{TS}" ,nonce= "{NONCE}",\t \tSig="{GET_SIG}"\t',  # OWS around = and ,
    ],
)
def test_header_syntax_of_revision_2_accepts(header: str) -> None:
    assert parse_authorization(header) == Authorization("dev-0001", str(TS), NONCE, GET_SIG)


def _ascii_case_variants(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flips: "".join(c.swapcase() if f else c for c, f in zip(word, flips, strict=True))
    )


@given(_ascii_case_variants("SLK1"), st.permutations(["key_id", "ts", "nonce", "sig"]), st.data())
def test_scheme_and_names_compare_ascii_case_insensitively(scheme: str, order: list[str], data: st.DataObject) -> None:
    values = {"key_id": "dev-0001", "ts": str(TS), "nonce": NONCE, "sig": GET_SIG}
    names = [data.draw(_ascii_case_variants(n)) for n in order]
    header = f"{scheme} " + ", ".join(f'{n}="{values[o]}"' for n, o in zip(names, order, strict=True))
    assert parse_authorization(header) == Authorization("dev-0001", str(TS), NONCE, GET_SIG)


FOLDS_TO_ASCII = "\u017f\u0131\u212a\u0130\uff33\uff2c\uff2b\uff11"  # long s, dotless i, Kelvin, dotted I, fullwidth
NOT_ASCII = st.sampled_from(FOLDS_TO_ASCII) | st.characters(min_codepoint=0x80, exclude_categories=("Cs",))


@given(st.integers(0, 3), NOT_ASCII, st.booleans())
def test_a_non_ascii_character_in_the_scheme_never_passes(at: int, char: str, insert: bool) -> None:
    """Whatever Unicode folds to an ASCII letter (`\u017f`, `\u0131`, the Kelvin sign, fullwidth forms) is not one."""
    scheme = "SLK1"[:at] + char + "SLK1"[at + (0 if insert else 1) :]
    with pytest.raises(Unauthorized):
        parse_authorization(f"{scheme} {PARAMS_TEXT}")


@given(st.text(alphabet=st.sampled_from(" \t,"), max_size=6))
def test_between_scheme_and_parameters_only_spaces(junk: str) -> None:
    """After `SLK1 `: more spaces are fine (1*SP); a tab or an empty list element anywhere there is not."""
    header = f"SLK1 {junk}{PARAMS_TEXT}"
    if "\t" in junk or "," in junk:
        with pytest.raises(Unauthorized):
            parse_authorization(header)
    else:
        assert parse_authorization(header).key_id == "dev-0001"


@pytest.mark.parametrize("target", ["/v1/device", "/v1/calls/claim", "/v1/device?x=1&y=2", "/"])
def test_plain_targets(target: str) -> None:
    assert check_target(target) == target


@pytest.mark.parametrize(
    "target",
    ["/v1/%64evice", "/v1//device", "//v1/device", "/v1/../v1/device", "/v1/device/..", "/v1/device?a=..",
     "/v1/device?x=%20", "v1/device", "http://pbx.example.com/v1/device", "", "/v1/dev ice", "/v1/dévice",
     "*"],
)  # fmt: skip
def test_refused_targets(target: str) -> None:
    with pytest.raises(BadTarget):
        check_target(target)


def _verify(auth: Authorization, secret: bytes | None = SECRET, now: int = TS, body: bytes = b"",
            method: str = "GET", target: str = "/v1/device", host: str = HOST) -> int:  # fmt: skip
    return verify(auth, secret, method=method, host=host, target=target, body=body, now=now)


def test_verify_accepts_the_vectors() -> None:
    assert _verify(parse_authorization(GET_HEADER)) == TS + 61
    claim = Authorization("dev-0001", str(TS), NONCE, CLAIM_SIG)
    assert _verify(claim, method="POST", target="/v1/calls/claim", body=CLAIM_BODY) == TS + 61


@pytest.mark.parametrize(
    "change",
    [
        {"method": "POST"},
        {"target": "/v1/device?"},
        {"host": "pbx.example.com"},  # another deployment
        {"host": "PBX.example.com:8443"},
        {"body": b" "},
        {"secret": bytes(32)},
        {"secret": None},  # unknown key_id
    ],
)
def test_verify_refuses_anything_changed(change: dict[str, object]) -> None:
    with pytest.raises(Unauthorized):
        _verify(parse_authorization(GET_HEADER), **change)  # type: ignore[arg-type]


def test_verify_refuses_a_changed_nonce_or_ts() -> None:
    auth = parse_authorization(GET_HEADER)
    with pytest.raises(Unauthorized):
        _verify(auth._replace(nonce="n0nce-0123456788"))
    with pytest.raises(Unauthorized):
        _verify(auth._replace(ts=str(TS + 1)), now=TS + 1)


@pytest.mark.parametrize(("now", "ok"), [(TS - 60, True), (TS + 60, True), (TS - 61, False), (TS + 61, False)])
def test_clock_window(now: int, ok: bool) -> None:
    auth = parse_authorization(GET_HEADER)
    if ok:
        assert _verify(auth, now=now) == TS + 61
    else:
        with pytest.raises(Unauthorized, match="clock window"):
            _verify(auth, now=now)


def test_signature_is_checked_before_the_clock() -> None:
    auth = parse_authorization(GET_HEADER)._replace(sig="A" * 43)
    with pytest.raises(Unauthorized, match="signature"):
        _verify(auth, now=TS + 10_000)


def test_unknown_key_id_costs_the_same_hmac_work(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.new

    def counting(key: bytes, msg: bytes, digestmod: object) -> hmac.HMAC:
        calls.append(len(key))
        return real(key, msg, digestmod)  # type: ignore[arg-type]

    monkeypatch.setattr(signing.hmac, "new", counting)
    compared: list[tuple[str, str]] = []
    real_compare = hmac.compare_digest
    monkeypatch.setattr(signing.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real_compare(a, b))
    auth = parse_authorization(GET_HEADER)
    _verify(auth)
    known = list(calls)
    calls.clear()
    with pytest.raises(Unauthorized):
        _verify(auth, secret=None)
    assert calls == known == [32, 32]  # api_key, then the signature: both done for an unknown key_id too
    assert len(compared) == 2  # and the constant-time comparison

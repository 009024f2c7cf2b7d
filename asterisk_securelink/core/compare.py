"""Comparing a presented number with a key, and with a registered number (SLK1.md 1.1, "Comparing a presented number
with a key").

Pure. The network may deliver a key in another form than the one presented (`+12677638475` as `12677638475`,
`2677638475`, `0112677638475`): the comparison is on the format's significant part (its last K digits, all of the
key's entropy), and whatever stands before them must be a configured trunk prefix followed by a suffix of the format's
literal prefix. Inputs are digit strings already normalized by `numbers.classify` (no '+', ASCII digits).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Final

from asterisk_securelink.core.numbers import Kind, classify

MAX_TRUNK_PREFIXES: Final = 16
MAX_TRUNK_PREFIX_DIGITS: Final = 8
MAX_E164_DIGITS: Final = 15  # ITU-T E.164: country code + national number
_TRUNK_PREFIX: Final = re.compile(rf"[0-9]{{1,{MAX_TRUNK_PREFIX_DIGITS}}}")

# ITU-T E.164 assigned country codes (spare and reserved codes left out). Prefix-free: no code starts another, so
# the first 1, 2 or 3 digits of an international number name at most one of them.
_CODES: Final = """
1 7
20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 66 81 82 84 86
90 91 92 93 94 95 98
211 212 213 216 218 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239
240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255 256 257 258 260 261 262 263 264 265 266 267 268 269
290 291 297 298 299 350 351 352 353 354 355 356 357 358 359 370 371 372 373 374 375 376 377 378 379
380 381 382 383 385 386 387 388 389 420 421 423 500 501 502 503 504 505 506 507 508 509
590 591 592 593 594 595 596 597 598 599 670 672 673 674 675 676 677 678 679 680 681 682 683 685 686 687 688 689
690 691 692 800 808 850 852 853 855 856 870 880 881 882 883 886 888
960 961 962 963 964 965 966 967 968 970 971 972 973 974 975 976 977 979 992 993 994 995 996 998
"""
COUNTRY_CODES: Final = frozenset(_CODES.split())


def check_trunk_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Trunk prefixes as configured or provisioned: digit strings a carrier may put in front (`0`, `00`, `011`, `1`)."""
    found = tuple(prefixes)
    if len(found) > MAX_TRUNK_PREFIXES:
        raise ValueError(f"at most {MAX_TRUNK_PREFIXES} trunk prefixes, got {len(found)}")
    for p in found:
        if not isinstance(p, str) or not _TRUNK_PREFIX.fullmatch(p):
            raise ValueError(f"a trunk prefix is 1..{MAX_TRUNK_PREFIX_DIGITS} digits 0-9, got {p!r}")
    return found


def prefix_ok(prefix: str, literal_prefix: str, trunk_prefixes: Sequence[str]) -> bool:
    """Rule 3: `prefix` is `T + L`, T empty or a trunk prefix, L a suffix of the literal prefix (possibly empty).

    Every trunk prefix `prefix` starts with is tried, not only the first or the shortest: with `0` and `011`
    configured, `011` + `1` is found although `0` matches first. Nothing here is secret (the literal prefix is
    public), so this need not run in constant time.
    """
    ok = False
    for t in ("", *trunk_prefixes):
        if prefix.startswith(t) and literal_prefix.endswith(prefix[len(t) :]):
            ok = True
    return ok


def matches(presented_digits: str, key_significant: str, literal_prefix: str, trunk_prefixes: Sequence[str]) -> bool:
    """Rules 2-3: the last K digits equal the key's significant part (constant time), the rest passes `prefix_ok`.

    Fewer than K digits is no match; the digits are still compared, so the time taken says nothing about the key.
    """
    k = len(key_significant)
    tail = presented_digits[-k:] if k else ""
    same = hmac.compare_digest(tail.encode("utf-8"), key_significant.encode("utf-8"))
    head_ok = prefix_ok(presented_digits[: max(0, len(presented_digits) - k)], literal_prefix, trunk_prefixes)
    return same and head_ok and len(presented_digits) >= k > 0


# -- registered numbers (two-factor) ----------------------------------------------------------------------------
def country_code_of(e164_digits: str) -> str | None:
    """The ITU-T E.164 country code an international number (digits, with or without '+') starts with, or None."""
    digits = e164_digits[1:] if e164_digits.startswith("+") else e164_digits
    for n in (1, 2, 3):
        if digits[:n] in COUNTRY_CODES and len(digits) > n:
            return digits[:n]
    return None


def to_e164(raw: str, default_country_code: str | None) -> str:
    """A number as typed by an administrator, in E.164 form ('+' and digits).

    `+...` is international. Anything else is a national number (without its trunk prefix) and gets
    `default_country_code`. Raises ValueError, with a message that says what to type instead, for a number that is
    not one, an unknown country code, national input without a default country code, or national input that starts
    with 0 or (for +1) with the country code, where the intent cannot be told.
    """
    p = classify(raw)
    if p.kind is not Kind.DIGITS:
        raise ValueError("not a phone number: give 3..15 digits, in international form (+1 555 000 2222)")
    if "+" in raw:  # classify accepted it: the only '+' it may hold is the leading one
        digits = p.digits
    else:
        if default_country_code is None:
            raise ValueError(
                "a national number needs a default country code: give it in international form (+1 555 000 2222) "
                "or configure the default country code"
            )
        if default_country_code not in COUNTRY_CODES:
            raise ValueError(f"the default country code {default_country_code!r} is not an E.164 country code")
        if p.digits.startswith("0"):
            raise ValueError(
                "a national number starting with 0 is ambiguous (trunk prefix or part of the number): "
                "give it in international form (+44 20 ...)"
            )
        if default_country_code == "1" and len(p.digits) == 11 and p.digits.startswith("1"):
            raise ValueError("this number already starts with the country code 1: write it as +1 ...")
        digits = default_country_code + p.digits
    cc = country_code_of(digits)
    if cc is None:
        raise ValueError("the number does not start with an E.164 country code")
    if len(digits) > MAX_E164_DIGITS:
        raise ValueError(f"an E.164 number has at most {MAX_E164_DIGITS} digits, this one has {len(digits)}")
    return "+" + digits


def same_registered_number(presented_digits: str, registered_e164: str, trunk_prefixes: Sequence[str]) -> bool:
    """Is a presented caller number the registered (E.164) one? Rules 2-3 with the country code as the literal
    prefix and the national number as the significant part: `+15550002222` matches `5550002222`, `15550002222`.

    A registered number without a known country code is compared whole (no literal prefix).
    """
    digits = registered_e164[1:] if registered_e164.startswith("+") else registered_e164
    cc = country_code_of(digits) or ""
    return matches(presented_digits, digits[len(cc) :], cc, trunk_prefixes)

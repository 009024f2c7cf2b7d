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

from asterisk_securelink.core.numbers import MAX_RAW_LENGTH, is_ascii_digits, remove_separators

MAX_TRUNK_PREFIXES: Final = 16
MAX_TRUNK_PREFIX_DIGITS: Final = 8
MIN_E164_DIGITS: Final = 8  # SLK1.md revision 2: a registered number is + and 8-15 digits
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


_E164: Final = re.compile(r"\+[1-9][0-9]{7,14}")  # revision 2: '+', a digit 1-9 and 7-14 more digits
_ASK: Final = "give it in international form with + (+1 555 000 2222, +44 20 7946 0000)"


def national_trunk_prefix(country_code: str) -> str:
    """The one national trunk prefix removed from a number typed without '+' (SLK1.md, "The registered number"):
    `1` where the country code is 1, `0` everywhere else."""
    return "1" if country_code == "1" else "0"


def to_e164(raw: str, default_country_code: str | None) -> str:
    """A number as an administrator typed it, in E.164 (SLK1.md 1.1 revision 2, "The registered number").

    After removing the separators of rule 1: `+` and 8-15 digits is E.164 as is. Without `+`, and only with a default
    country code C: one leading national trunk prefix (`national_trunk_prefix`: `1` for C = 1, else `0`) is removed,
    what is left must not start with 0, and `+C` is put in front (C = 1: `5550002222` and `15550002222` are both
    `+15550002222`; C = 44: `02079460000` is `+442079460000`). Either way the result must be `+`, a digit 1-9 and
    7-14 more digits, starting with an assigned country code. Anything else raises ValueError with a message that
    asks for the `+` form (`0044...` and `011...` are refused, not guessed at).
    """
    text = remove_separators(raw) if isinstance(raw, str) and len(raw) <= MAX_RAW_LENGTH else ""
    international = text.startswith("+")
    digits = text[1:] if international else text
    if not is_ascii_digits(digits):
        raise ValueError(f"not a phone number: {_ASK}")
    if international:
        if not MIN_E164_DIGITS <= len(digits) <= MAX_E164_DIGITS:
            raise ValueError(f"an international number is + and {MIN_E164_DIGITS}-{MAX_E164_DIGITS} digits: {_ASK}")
    else:
        if not default_country_code:
            raise ValueError(f"a number without + needs a default country code: {_ASK} or configure one")
        if default_country_code not in COUNTRY_CODES:
            raise ValueError(f"the default country code {default_country_code!r} is not an E.164 country code")
        trunk = national_trunk_prefix(default_country_code)
        national = digits[len(trunk) :] if digits.startswith(trunk) else digits
        if national.startswith("0"):
            raise ValueError(
                "a number without + that starts with 0 after its national trunk prefix is not a national number "
                f"(an international prefix such as 00 or 011 is not guessed at): {_ASK}"
            )
        digits = default_country_code + national
    if not _E164.fullmatch("+" + digits):
        raise ValueError(
            f"an E.164 number is + and {MIN_E164_DIGITS}-{MAX_E164_DIGITS} digits, not starting with 0; this one has "
            f"{len(digits)}: {_ASK}"
        )
    if country_code_of(digits) is None:
        raise ValueError(f"the number does not start with an E.164 country code: {_ASK}")
    return "+" + digits


def same_registered_number(presented_digits: str, registered_e164: str, trunk_prefixes: Sequence[str]) -> bool:
    """Is a presented caller number the registered (E.164) one? Rules 2-3 with the country code as the literal
    prefix and the national number as the significant part: `+15550002222` matches `5550002222`, `15550002222`.

    A registered number without a known country code is compared whole (no literal prefix).
    """
    digits = registered_e164[1:] if registered_e164.startswith("+") else registered_e164
    cc = country_code_of(digits) or ""
    return matches(presented_digits, digits[len(cc) :], cc, trunk_prefixes)

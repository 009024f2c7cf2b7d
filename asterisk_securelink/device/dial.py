"""What a phone provisioned for the access number dials (CALLING.md, "DTMF", "Intent"; SLK1.md "1.2 provisioning").
Pure: a reference to port to Kotlin or Swift.

* `dtmf_dial_string(prov, key, destination)` - `ACCESS,,KEY,DEST`: the access number, a pause of two `,` (about 3 s
  each by 3GPP TS 22.101, 0.5 s on some Android builds) while the PBX answers, the key's significant part (the
  inbound format's K digits), then, when there is one, `,` and the destination. Never `#` or `*`: iOS refuses a
  `tel:` URL holding them, and the PBX ends the key field at its K-th digit and the destination at 4 s of silence.
* `tel_uri(dial)` - `tel:` + the dial string, `,` kept as the pause. RFC 3966 defines no pause character (its
  visual separators are `-.()`), so this is the dialers' convention, not RFC 3966: iOS takes `tel:+1...,,KEY,DEST`
  as written; an Android app builds the same with `Uri.fromParts("tel", dial, null)`, which percent-encodes `+` and
  `,` (`%2B`, `%2C`) and the dialer decodes them. Nothing else in the string needs encoding (digits and one `+`).
* `intent_usable(intent, now_ms)` - an intent is dialled only while at least 15 s of it remain by the platform's
  clock of the answer (`server_time_ms` plus the time since it arrived); otherwise the phone uses DTMF.
"""

from __future__ import annotations

import re
from typing import Final

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.provisioning import ACCESS_MODES, Provisioning
from asterisk_securelink.errors import InputError

PAUSE: Final = ","
MIN_INTENT_MS: Final = 15_000  # CALLING.md: the phone dials an intent only if at least 15 s of it remain
DESTINATION: Final = re.compile(r"[0-9]{1,20}")


class DialError(InputError, ValueError):
    """No dial string: the device is not provisioned for the access number, or the destination is not digits."""


def check_destination(destination: str | None) -> str | None:
    """`[0-9]{1,20}` or None. Raises DialError."""
    if destination is not None and not DESTINATION.fullmatch(destination):
        raise DialError("DEST must be 1 to 20 digits 0-9 (no # or *)")
    return destination


def access_number(prov: Provisioning) -> str:
    """The access number of a device provisioned for `dtmf` or `intent`. Raises DialError for any other."""
    if prov.mode not in ACCESS_MODES or not prov.access:
        raise DialError(f"this device is provisioned for {prov.mode}, not for the access number (dtmf or intent)")
    return prov.access


def dtmf_dial_string(prov: Provisioning, key: str, destination: str | None = None) -> str:
    """`ACCESS,,KEY[,DEST]` for the inbound key `key` (as rendered, e.g. `+13582874290`). Raises DialError."""
    access = access_number(prov)
    digits = NumberFormat(prov.inbound_format).significant(key)
    tail = f"{PAUSE}{destination}" if check_destination(destination) else ""
    return f"{access}{PAUSE * 2}{digits}{tail}"


def tel_uri(dial: str) -> str:
    """The `tel:` URI of a dial string, `,` kept as the pause (see the module's note on RFC 3966)."""
    return f"tel:{dial}"


def intent_usable(remaining_ms: int) -> bool:
    """Whether an intent with `remaining_ms` left may still be dialled."""
    return remaining_ms >= MIN_INTENT_MS

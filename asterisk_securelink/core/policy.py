"""The verification policy: from what the index found to a verdict. Pure; the service does the I/O around it.

The steps, in order (SLK1.md, "Verification rules"):
1. `identify`: which single device the key belongs to, or `mismatch` / `ambiguous`. A key matching several devices
   is never resolved by an arbitrary pick; only the caller's registered number may narrow it to one.
2. `lifecycle.inbound_verdict`: a suspended or revoked device's valid key is `mismatch` (such devices are not in the
   index; this catches one suspended on another node moments ago).
3. the atomic single-use spend (store); its outcome becomes `admitted`/`unregistered` or `replayed` via
   `lifecycle.after_spend`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from asterisk_securelink.core.keyindex import Candidate
from asterisk_securelink.core.verdicts import Verdict


@dataclass(frozen=True)
class Identified:
    verdict: Verdict | None  # None: one device identified, go on
    candidate: Candidate | None = None


def identify(
    candidates: Sequence[Candidate],
    mobile_of: Mapping[int, str | None],
    hint_number: str | None,
    *,
    require_hint: bool = False,
) -> Identified:
    """Pick the one device a key identifies.

    `mobile_of` maps candidate device ids to their registered mobile number (normalized digits).
    `hint_number` is the caller's number when it is not itself the key (DNIS mode).
    `require_hint` is the two-factor mode: only the device registered with `hint_number` may match.
    """
    if require_hint or hint_number is not None:
        narrowed = [c for c in candidates if hint_number is not None and mobile_of.get(c.device_id) == hint_number]
        if narrowed or require_hint:
            candidates = narrowed
    devices = {c.device_id for c in candidates}
    if not devices:
        return Identified(Verdict.MISMATCH)
    if len(devices) > 1:
        return Identified(Verdict.AMBIGUOUS)
    return Identified(None, max(candidates, key=lambda c: c.epoch))


def strength_bits(size: int, window_width: int, devices: int) -> float:
    """log2(S / (W*D)): how hard one random guess is when the key alone identifies the device (SLK1.md)."""
    return math.log2(size / (window_width * max(1, devices)))


WEAK_BITS = 30.0

"""The spec's test vectors (SLK1.md, "Test vectors"), shared by the core, device and service tests."""

from __future__ import annotations

from asterisk_securelink.core.provisioning import Provisioning

SPEC_SECRET = bytes(range(32))  # the spec's test-vector secret

# SLK1.md 1.1 "Test vectors", "Comparison (1.1)": format, key (inbound, epoch 0), presented, trunk_prefixes, match
COMPARISON: list[tuple[str, str, str, tuple[str, ...], bool]] = [
    ("+1NXXNXXXXXX", "+12677638475", "+12677638475", (), True),
    ("+1NXXNXXXXXX", "+12677638475", "12677638475", (), True),
    ("+1NXXNXXXXXX", "+12677638475", "2677638475", (), True),
    ("+1NXXNXXXXXX", "+12677638475", "(267) 763-8475", (), True),
    ("+1NXXNXXXXXX", "+12677638475", "0112677638475", ("011",), True),
    ("+1NXXNXXXXXX", "+12677638475", "0112677638475", (), False),
    ("+1NXXNXXXXXX", "+12677638475", "+442677638475", ("00", "011"), False),
    ("+1NXXNXXXXXX", "+12677638475", "677638475", (), False),
    ("XXXXXXXXXX", "6141638475", "6141638475", (), True),
    ("XXXXXXXXXX", "6141638475", "+16141638475", (), False),
    ("XXXXXXXXXX", "6141638475", "+16141638475", ("1",), True),
    ("XXXXXXXXXX", "6141638475", "06141638475", ("0",), True),
    ("XXXXXXXXXX", "6141638475", "6141638476", (), False),
    ("555XXXXXXX", "5551638475", "5551638475", (), True),
    ("555XXXXXXX", "5551638475", "1638475", (), True),
    ("555XXXXXXX", "5551638475", "55551638475", (), False),
    ("+4420XXXXXXXX", "+442041638475", "02041638475", ("0",), True),
    ("+4420XXXXXXXX", "+442041638475", "00442041638475", ("00",), True),
    ("+4420XXXXXXXX", "+442041638475", "02041638475", (), False),
    ("+1NXXNXXXXXX", "+12677638475", "0112677638475", ("0", "011"), True),  # a first-match implementation: no match
    ("+4420XXXXXXXX", "+442041638475", "00442041638475", ("0", "00"), True),
    ("+4420XXXXXXXX", "+442041638475", "0041638475", ("0", "00"), True),
    ("+4420XXXXXXXX", "+442041638475", "41638475", (), True),
    ("+4420XXXXXXXX", "+442041638475", "1638475", (), False),  # fewer than K digits
    ("+1NXXNXXXXXX", "+12677638475", "267/763-8475", (), True),
]
ROW_IDS = [f"{f}-{p}-{','.join(t) or 'none'}" for f, _, p, t, _ in COMPARISON]

# SLK1.md 1.1, the burst vectors
BURST = {  # epoch: inbound XXXXXXXXXX, inbound +1NXXNXXXXXX, outbound XXXXXXXXXX, outbound +1NXXNXXXXXX
    99: ("1670674729", "+15588674729", "2399623606", "+19499623606"),
    100: ("1646302798", "+17058302798", "8191505962", "+16239505962"),
    101: ("0157179956", "+15697179956", "0735751441", "+13419751441"),
    102: ("6021453076", "+19027453076", "2118144645", "+14148144645"),
}


def prov(
    secret: bytes = SPEC_SECRET,
    *,
    period: int = 30,
    t0: int = 0,
    inbound: str = "XXXXXXXXXX",
    outbound: str = "XXXXXXXXXX",
    look_ahead: int = 1,
    trunk: tuple[str, ...] = (),
    key_id: str = "vector",
) -> Provisioning:
    """A provisioning of the vector secret (device 7), as the device tests build it."""
    return Provisioning(period, t0, inbound, outbound, 1, look_ahead, trunk, key_id=key_id, secret=secret, device_id=7)

"""`outbound.present = number` on the real testbed: the mobile leg presents the enterprise's own number instead of a
key, and the phone verifies the PBX by claiming with the number it sees: 200 with the call's key (the one escrow
opens) while the PBX is calling it, 404 for another number or once the call is over."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from device_api_harness import CALLER, Api, call_in_background, serving
from harness import fresh_window, no_channels_left
from sipp import UasProcess

ENTERPRISE = "+12155550100"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from serving(
        tmp_path_factory.mktemp("securelink-number"), f'present = "number"\npresent_number = "{ENTERPRISE}"\n'
    )


def test_number_mode_the_phone_verifies_the_pbx_by_claiming(api: Api) -> None:
    dev, phone = api.enrolled("Number", "+15550300005")
    fresh_window()
    with UasProcess(5070, mode="answer", ring_ms=3000) as uas:
        thread, results = call_in_background([(CALLER, f"6{dev['id']}")])
        (invite,) = uas.wait_for_invites(1, timeout=15, to="+15550300005")
        assert invite.from_user.lstrip("+") == ENTERPRISE.lstrip("+")  # the enterprise's number, not a key
        spoofed = phone.claim("+12155550199")  # a number the PBX is not calling from
        assert (spoofed.status, spoofed.error) == (404, "not_found")
        genuine = phone.claim(invite.from_user)  # what the phone was shown
        assert genuine.status == 200, genuine.body
        thread.join(60)
    assert [r.status_code for r in results] == [200]
    no_channels_left()
    assert api.escrowed_key(genuine.json["call_id"]) == genuine.json["call_key"]
    over = phone.claim(invite.from_user, idem="later")
    assert (over.status, over.error) == (404, "not_found")  # the call is over: a spoofer calling now gets 404

"""The doctor's readings of AMI answers (pure): transports in pjsip.conf, and which contexts route to securelink."""

from __future__ import annotations

from asterisk_securelink.doctor import Check, entry_routes, transports_in


def test_transports_are_categories_of_type_transport() -> None:
    answer = {
        "Response": "Success",
        "Category-000000": "global",
        "Category-000001": "transport-udp",
        "Category-000002": "carrier",
        "Line-000000-000000": "type=global",
        "Line-000001-000000": "type=transport",
        "Line-000001-000001": "protocol=udp",
        "Line-000002-000000": "type = endpoint",
        "Line-000002-000001": "transport=transport-udp",
    }
    assert transports_in(answer) == ["transport-udp"]
    assert transports_in({"Category-000000": "global", "Line-000000-000000": "type=global"}) == []


def test_entry_routes_name_the_admins_contexts_that_reach_an_entry_context() -> None:
    events = [
        {"Context": "from-carrier", "Application": "Goto", "AppData": "securelink-inbound,${EXTEN},1"},
        {"Context": "from-carrier2", "Application": "Goto", "AppData": "securelink-inbound-dnis,${EXTEN:4},1"},
        {"Context": "other", "Application": "Dial", "AppData": "PJSIP/1001"},
        {"Context": "lookalike", "Application": "Goto", "AppData": "securelink-inbound-extra,s,1"},
        {"Context": "securelink-inbound", "Application": "Stasis", "AppData": "securelink,inbound,ani"},
        {"Context": "includer", "IncludeContext": "securelink-inbound-agi"},
    ]
    assert entry_routes(events) == ["from-carrier", "from-carrier2", "includer"]
    assert entry_routes([events[2], events[3], events[4]]) == []


def test_a_warning_passes_but_says_so() -> None:
    w = Check("SIP transport", False, "none", "add one", warn=True)
    assert w.passed and w.line().startswith("[warn]") and "fix: add one" in w.line()
    assert not Check("database", False, "x").passed

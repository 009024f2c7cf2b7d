"""The shipped dialplan's shape where a call's cost depends on it (issue 24): the Stasis entry contexts clear with
[securelink-clear]'s own MSet inline, and [securelink-verdict] runs one extension per hand-off kind."""

from __future__ import annotations

import re

from support.dialplan import app_of, contexts, first_priorities

from asterisk_securelink.core.handoff import IN_VARIABLE, KINDS

STASIS_ENTRIES = ("securelink-inbound", "securelink-inbound-dnis", "securelink-access")


def test_each_stasis_entry_context_clears_as_securelink_clear_does_then_enters_the_app() -> None:
    ctx = contexts()
    clear = app_of(ctx["securelink-clear"][0])
    assert clear.startswith("MSet(SECURELINK_RESULT=,") and "${ARG1}" in clear
    cleared = set(re.findall(r"(SECURELINK_\w+)=", clear))
    assert {"SECURELINK_RESULT", "SECURELINK_DEVICE", "SECURELINK_HANDOFF", "SECURELINK_EXTEN"} <= cleared
    for name in STASIS_ENTRIES:
        lines = ctx[name]
        assert app_of(lines[0]) == clear.replace("${ARG1}", "${EXTEN}"), name  # the same variables, the same filter
        assert app_of(lines[1]).startswith("Stasis(securelink,inbound,"), name
        assert app_of(lines[2]) == "Goto(securelink-after-stasis,${EXTEN},1)", name
        assert len(lines) == 3, name


def test_the_verdict_context_has_one_extension_per_kind_and_the_long_form_reaches_each() -> None:
    verdict = contexts()["securelink-verdict"]
    firsts = first_priorities(verdict)
    assert set(firsts) == {f"_{k}~." for k in KINDS} | {IN_VARIABLE}
    for kind in KINDS:
        start = firsts[f"_{kind}~."]
        assert app_of(verdict[start]).endswith("=${REPLACE(EXTEN,~,\\,)})"), kind  # the fields, from the extension
        assert verdict[start + 1].startswith(" same => n(fields),"), kind  # where `v` goes on
    long_form = verdict[firsts[IN_VARIABLE] :]
    at = next(i for i, ln in enumerate(long_form) if "~v,fields)" in ln)
    dispatch = app_of(long_form[at])
    assert set(re.findall(r'"\$\{SECURELINK_HANDOFF_KIND\}" = "(\w)"', dispatch)) == set(KINDS)
    assert dispatch.endswith("?${SECURELINK_HANDOFF_KIND}~v,fields)")
    # anything else falls through to `bad`: rejected
    after = long_form[at + 1 :]
    assert after[0].startswith(" same => n(bad),") and app_of(after[-1]) == "Hangup(21)"


def test_an_admitted_verdict_goes_on_only_when_every_check_holds_and_a_refusal_hangs_up() -> None:
    verdict = contexts()["securelink-verdict"]
    firsts = first_priorities(verdict)
    start = firsts["_a~."]
    check = app_of(verdict[start + 1])
    for cond in ('"${STASISSTATUS}" != "SUCCESS"', '"${SECURELINK_EXTEN}" = ""', '"${SECURELINK_RESULT}" != "admitted"',
                 '"${SECURELINK_DEVICE}" = ""'):  # fmt: skip
        assert cond in check
    assert check.endswith("?v,bad)")
    assert app_of(verdict[firsts["_r~."] + 2]) == "Hangup(21)"

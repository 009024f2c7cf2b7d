"""The contract with the dialplan (`dialplan/securelink.conf`): the channel variables securelink sets."""

from __future__ import annotations

from typing import Final

RESULT_VAR: Final = "SECURELINK_RESULT"  # the verdict (core.verdicts.Verdict)
DEVICE_VAR: Final = "SECURELINK_DEVICE"  # the device id a key identified
MODE_VAR: Final = "SECURELINK_MODE"  # ani / dnis / dtmf / intent: where the key was found (how the call came)
METHOD_VAR: Final = "SECURELINK_METHOD"  # ani / dnis / dtmf / intent / callback (CALLING.md, the dialplan contract)
DESTINATION_VAR: Final = "SECURELINK_DESTINATION"  # the destination digits ([0-9]{1,20}), or empty: home
CONTEXT_VAR: Final = "SECURELINK_CONTEXT"  # the device's routing context
CALLERID_VAR: Final = "SECURELINK_CALLERID"  # the device's caller ID, as CALLERID(all) takes it
HOME_VAR: Final = "SECURELINK_HOME"  # without a destination: the home extension (empty: none, hang up)
CDR_DEVICE: Final = "CDR(securelink_device)"  # set by the app itself, so a replaced [securelink-admitted] keeps them
CDR_METHOD: Final = "CDR(securelink_method)"
TIMEOUT_VAR: Final = "TIMEOUT(absolute)"  # [routing] max_call_seconds
CALL_KEY_VAR: Final = "SECURELINK_CALL_KEY_ID"  # the escrow row id of a connected call's per-call key
AGI_TOKEN_VAR: Final = "SECURELINK_AGI_TOKEN"  # noqa: S105 - a variable name. FastAGI: `agi.result_token`, checked by the dialplan (never logged)
AGI_TOKEN_PLACEHOLDER: Final = "@AGI_TOKEN@"  # noqa: S105 - a placeholder, in dialplan/securelink.conf; `asterisk install` writes the token
VERDICT_CONTEXT: Final = "securelink-verdict"  # where the app hands a verdict over in one request (core/handoff.py)
HANDOFF_VAR: Final = "SECURELINK_HANDOFF"  # a hand-off too long for an extension (then the extension is `v`)
END_EVENT: Final = "SecureLinkCallEnd"  # UserEvent of [securelink-end]: an admitted call's end, from the dialplan
REGISTRATION_CONTEXT: Final = "securelink-register"  # shipped (`[inbound] registration_context`)
ADMITTED_CONTEXT: Final = "securelink-admitted"  # the shipped admitted context (`[inbound] admitted_context`)

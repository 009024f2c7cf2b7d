"""The contract with the dialplan (`dialplan/securelink.conf`): the channel variables securelink sets."""

from __future__ import annotations

from typing import Final

RESULT_VAR: Final = "SECURELINK_RESULT"  # the verdict (core.verdicts.Verdict)
DEVICE_VAR: Final = "SECURELINK_DEVICE"  # the device id a key identified
MODE_VAR: Final = "SECURELINK_MODE"  # ani / dnis / dtmf / intent: where the key was found (how the call came)
METHOD_VAR: Final = "SECURELINK_METHOD"  # access-number calls: dtmf / intent (CALLING.md, the dialplan contract)
DESTINATION_VAR: Final = "SECURELINK_DESTINATION"  # access-number calls: the destination digits, or empty
CALL_KEY_VAR: Final = "SECURELINK_CALL_KEY_ID"  # the escrow row id of a connected call's per-call key

"""The contract with the dialplan (`dialplan/securelink.conf`): the channel variables securelink sets."""

from __future__ import annotations

from typing import Final

RESULT_VAR: Final = "SECURELINK_RESULT"  # the verdict (core.verdicts.Verdict)
DEVICE_VAR: Final = "SECURELINK_DEVICE"  # the device id a key identified
MODE_VAR: Final = "SECURELINK_MODE"  # ani / dnis: where the key was found
CALL_KEY_VAR: Final = "SECURELINK_CALL_KEY_ID"  # the escrow row id of a connected call's per-call key

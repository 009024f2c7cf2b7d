"""The vouchers' store half: a per-call key kept sealed for its device (`docs/device-api.md`, "Vouchers"), released
by one conditional UPDATE (not yet released, not expired), deleted when the call ends or its time is up.

Every statement is SQLAlchemy Core, built once, run by `store.statements` (on SQLite on the driver's thread, in the
group commit of the hot writes; else on the process's `store.lanes.Lanes`); each call is one statement, or reads
followed by the one conditional statement that decides, so none needs a wider transaction and two nodes on one
database release a voucher at most once. The call key is sealed (`callkeys.vouchers`): the database alone opens nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from asterisk_securelink.callkeys.vouchers import Presentation, RowIdentity, VoucherError, VoucherKeys
from asterisk_securelink.deviceapi.ports import ClaimOutcome, ClaimResult
from asterisk_securelink.store import statements
from asterisk_securelink.store.api_models import CallVoucher
from asterisk_securelink.store.lanes import Lanes, rowcount

log = logging.getLogger(__name__)

_COLUMNS = (
    CallVoucher.id, CallVoucher.call_id, CallVoucher.device_id, CallVoucher.direction, CallVoucher.literal_prefix,
    CallVoucher.significant_len, CallVoucher.match_tag, CallVoucher.sealed, CallVoucher.created_ms,
    CallVoucher.expires_ms, CallVoucher.released_ms, CallVoucher.idempotency_key,
)  # fmt: skip
_OF_DEVICE = (
    select(*_COLUMNS).where(CallVoucher.device_id == bindparam("device_id")).order_by(CallVoucher.created_ms.desc())
)
_OF_CALL = _OF_DEVICE.where(CallVoucher.call_id == bindparam("call_id"))
_BY_ID = select(*_COLUMNS).where(CallVoucher.id == bindparam("voucher_id"))
_RELEASE = (
    update(CallVoucher)
    .where(
        CallVoucher.id == bindparam("voucher_id"),
        CallVoucher.released_ms.is_(None),
        CallVoucher.expires_ms > bindparam("now_ms"),
    )
    .values(released_ms=bindparam("released_ms"), idempotency_key=bindparam("idem"))
)
_RELEASED = (
    select(CallVoucher.id)
    .where(CallVoucher.call_id == bindparam("call_id"), CallVoucher.released_ms.is_not(None))
    .limit(1)
)
_ADD = insert(CallVoucher).values({c.key: bindparam(c.key) for c in CallVoucher.__table__.columns})
_END_CALL = delete(CallVoucher).where(CallVoucher.call_id == bindparam("call_id"))


class VoucherStore:
    """Sealed per-call keys: `add` (the call paths), `claim` / `claim_by_call_id` (the device API's release),
    `end_call`, `purge`."""

    def __init__(self, lanes: Lanes, keys: VoucherKeys, trunk_prefixes: Sequence[str]) -> None:
        self.lanes = lanes
        self.keys = keys
        self.trunk_prefixes = tuple(trunk_prefixes)

    def __repr__(self) -> str:
        return "VoucherStore(<keys hidden>)"

    async def add(
        self,
        call_key_id: str,
        call_id: str,
        device_id: int,
        direction: str,
        presentation: Presentation,
        call_key: bytes,
        now_ms: int,
        ttl_s: int,
    ) -> None:
        """Keep `call_key` sealed for release to `device_id` from `now_ms` for `ttl_s` (or until `end_call`)."""
        row = RowIdentity(call_key_id, call_id, device_id, direction, now_ms)
        values = {
            "id": call_key_id, "call_id": call_id, "device_id": device_id, "direction": direction,
            "literal_prefix": presentation.literal_prefix, "significant_len": presentation.significant_len,
            "match_tag": presentation.tag, "sealed": self.keys.seal(call_key, row), "created_ms": now_ms,
            "expires_ms": now_ms + ttl_s * 1000, "released_ms": None, "idempotency_key": None,
        }  # fmt: skip
        await statements.write(self.lanes, _ADD, values)

    async def end_call(self, call_id: str) -> int:
        """The call hung up: its vouchers can no longer be claimed, and their sealed copies are deleted."""
        return await statements.write(self.lanes, _END_CALL, {"call_id": call_id})

    async def released(self, call_id: str) -> bool:
        """Has a voucher of `call_id` been released (claimed by its device)? A callback's confirmation, read by the
        node that placed it whichever node the claim reached."""
        return await statements.first(self.lanes, _RELEASED, {"call_id": call_id}) is not None

    async def purge(self, now_ms: int) -> int:
        """Delete expired vouchers (their sealed copies); returns how many."""
        async with self.lanes.connection() as c:
            return rowcount(await c.execute(delete(CallVoucher).where(CallVoucher.expires_ms <= now_ms)))

    async def claim(self, device_id: int, presented: str, now_ms: int, idempotency_key: str | None) -> ClaimResult:
        """The device's vouchers (one read), the match in memory, then one conditional UPDATE per live unreleased
        match (newest first) until one releases; only if none did, a fresh read of the live matches says repeat
        (same Idempotency-Key) or already claimed."""
        rows = await statements.rows(self.lanes, _OF_DEVICE, {"device_id": device_id})
        matching = [v for v in rows if self._matches(v, device_id, presented)]
        live = [v for v in matching if v.expires_ms > now_ms]
        if not live:
            others_live = any(v.expires_ms > now_ms for v in rows)
            reason = "expired" if matching else "wrong_number" if others_live else "no_call"
            return ClaimResult(ClaimOutcome.NOT_FOUND, reason)
        return await self._release_first(live, now_ms, idempotency_key)

    async def claim_by_call_id(
        self, device_id: int, call_id: str, now_ms: int, idempotency_key: str | None
    ) -> ClaimResult:
        """The same release for a call the platform named to this phone (an intent's, a callback's): the vouchers of
        `call_id` *of this device* (another device's call is `no_call`, as if it did not exist)."""
        rows = await statements.rows(self.lanes, _OF_CALL, {"device_id": device_id, "call_id": call_id})
        live = [v for v in rows if v.expires_ms > now_ms]
        if not live:
            return ClaimResult(ClaimOutcome.NOT_FOUND, "expired" if rows else "no_call")
        return await self._release_first(live, now_ms, idempotency_key)

    async def _release_first(self, live: list[Any], now_ms: int, idempotency_key: str | None) -> ClaimResult:
        """One conditional UPDATE per live unreleased voucher (newest first) until one releases; if none did, a
        fresh read says repeat (same Idempotency-Key), already claimed, or ended."""
        tried = False
        for v in live:  # newest first
            if v.released_ms is None:
                tried = True
                if await _release(self.lanes, v.id, now_ms, idempotency_key):
                    return self._answer(v, ClaimOutcome.RELEASED, "")
        if tried:  # another request (any node) released it between the read and the UPDATE: read it again
            again = [await statements.first(self.lanes, _BY_ID, {"voucher_id": v.id}) for v in live]
            live = [v for v in again if v is not None]
        # every live voucher of that call was released before (now, or by a racing request)
        for v in live:
            if idempotency_key and v.idempotency_key == idempotency_key and v.expires_ms > now_ms:
                return self._answer(v, ClaimOutcome.REPEATED, "")
        if not live:  # hung up between the two reads
            return ClaimResult(ClaimOutcome.NOT_FOUND, "ended")
        return ClaimResult(ClaimOutcome.ALREADY_CLAIMED, "released_before", live[0].call_id)

    def _matches(self, v: Any, device_id: int, presented: str) -> bool:
        kept = Presentation(v.literal_prefix, v.significant_len, v.match_tag)
        return self.keys.matches(device_id, presented, kept, self.trunk_prefixes)

    def _answer(self, v: Any, outcome: ClaimOutcome, reason: str) -> ClaimResult:
        row = RowIdentity(v.id, v.call_id, v.device_id, v.direction, v.created_ms)
        try:
            key = self.keys.open(v.sealed, row)
        except VoucherError:
            log.error("device api: voucher %s of call %s does not open (master key changed?)", v.id, v.call_id)
            return ClaimResult(ClaimOutcome.NOT_FOUND, "unsealable", v.call_id)
        return ClaimResult(outcome, reason, v.call_id, v.id, key)


async def _release(lanes: Lanes, voucher_id: str, now_ms: int, idempotency_key: str | None) -> bool:
    """The one statement that decides a release: not yet released, not expired."""
    values = {"voucher_id": voucher_id, "now_ms": now_ms, "released_ms": now_ms, "idem": idempotency_key}
    return await statements.write(lanes, _RELEASE, values) == 1

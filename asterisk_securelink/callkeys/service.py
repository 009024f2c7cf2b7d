"""`CallKeys`: the one service that gives a connected call its key, for inbound, outbound and the device API alike.

A call key is escrowed when an escrow public key is configured (`book.CallBook`), and, with the device API on, also
kept sealed for release to the call's device (`store.VoucherStore`) for `device_api.voucher_ttl` or until the call
ends. Without the device API an outbound call still gets an escrowed key (sent on TLS legs only); an inbound call gets
one only with the device API, since only a claim can hand it to the phone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from asterisk_securelink.callkeys import escrow
from asterisk_securelink.callkeys.book import CallBook, CallKeyIssued
from asterisk_securelink.callkeys.store import VoucherStore
from asterisk_securelink.callkeys.vouchers import Presentation
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import now_ms


class CallKeys:
    """Issue, keep and end per-call keys. `vouchers` is None when the device API is off. `clock` is unix ms."""

    def __init__(
        self, cfg: Config, book: CallBook, vouchers: VoucherStore | None = None, clock: Callable[[], int] = now_ms
    ) -> None:
        self.cfg = cfg
        self.book = book
        self.vouchers = vouchers
        self.clock = clock
        self.ttl = cfg.device_api.voucher_ttl

    async def outbound(self, call_id: str, device_id: int, presented: str | None) -> CallKeyIssued | None:
        """The key of an outbound call whose mobile leg presents `presented` (the outbound key, or
        `outbound.present_number` in number mode). None when there is neither an escrow key nor the device API."""
        if self.vouchers is None or not presented:
            return await self.book.issue_call_key(call_id, device_id, "outbound")
        keys = self.vouchers.keys
        if self.cfg.outbound.present == "number":
            shown = keys.of_number(device_id, presented)
        else:
            shown = keys.of_key(device_id, self.cfg.outbound_fmt, presented)
        return await self._issue(call_id, device_id, "outbound", shown)

    async def inbound(self, call_id: str, device_id: int, delivered_digits: str) -> str | None:
        """An admitted call whose key arrived as `delivered_digits` (normalized ANI or DNIS): the call key id
        (SECURELINK_CALL_KEY_ID), or None when the device API is off."""
        if self.vouchers is None:
            return None
        shown = self.vouchers.keys.of_delivered(device_id, self.cfg.inbound_fmt, delivered_digits)
        return (await self._issue(call_id, device_id, "inbound", shown)).key_id

    async def ended(self, call_id: str) -> None:
        """The call hung up: its vouchers can no longer be claimed."""
        if self.vouchers is not None:
            await self.vouchers.end_call(call_id)

    async def record(self, record: dict[str, Any]) -> None:
        """One call record when a call ends (the outbound controller's `on_finished`)."""
        await self.book.record(record)

    async def _issue(self, call_id: str, device_id: int, direction: str, shown: Presentation) -> CallKeyIssued:
        assert self.vouchers is not None
        issued = await self.book.issue_call_key(call_id, device_id, direction)  # escrowed, when configured
        if issued is None:
            issued = CallKeyIssued(str(uuid.uuid4()), escrow.new_call_key())
        await self.vouchers.add(issued.key_id, call_id, device_id, direction, shown, issued.key, self.clock(), self.ttl)
        return issued

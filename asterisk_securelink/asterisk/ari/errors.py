"""`AriError`: what the REST calls (`rest`) and the events WebSocket (`client`) raise when ARI fails or refuses."""

from __future__ import annotations

from asterisk_securelink.errors import ProtocolError


class AriError(ProtocolError):
    """An ARI call failed. `status` is the HTTP status, or 0 when no response arrived (refused, timeout, ...);
    `message` is ARI's own error message when it sent one."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        where = f"ARI {method} {path}".rstrip() if method else "ARI"
        super().__init__(f"{where} -> {status}: {message}" if status else f"{where}: {message}")


def refusal_message(status: int) -> str:
    """What a refusal without ARI's own message means (the events handshake; a REST 401 without a body)."""
    if status == 401:
        return "authentication failed (check the ARI username and password)"
    if status == 403:
        return "forbidden (the ARI user may not use this resource)"
    return "events WebSocket handshake refused"

"""The root of the package's own errors, and the few kinds of them that callers tell apart.

Every error class the package defines derives from `SecureLinkError` (a test walks the modules), so `except
SecureLinkError` catches ours and nothing else. Below it sit the kinds a caller acts on differently:

- `InputError`: what was given (a config value, a command's arguments, a number format, a code, a URI, a state file,
  the system a command runs on) cannot be used; the message says what is expected and is shown to the person as it is.
- `StartupError`: a long-running command cannot start; the message says what to fix.
- `KeyFileError`: a file that holds a key or a certificate cannot be used (missing, shared, malformed).
- `ProtocolError`: a peer (ARI, AMI, a FastAGI channel, the device API and its clients) answered badly, refused, or
  did not answer.
- `VerificationError`: a cryptographic check failed (a request signature, a sealed voucher).

The store's errors (`store.StoreError`) and a few signals (`device.BurstUsedUp`) derive from the root directly.
A class that was a `ValueError`, `OSError` or `RuntimeError` before it had a root stays one (multiple inheritance):
callers catch those builtins. This module imports nothing from the package, so any module may import it.
"""

from __future__ import annotations


class SecureLinkError(Exception):
    """The root of every error class this package defines."""


class InputError(SecureLinkError):
    """What was given cannot be used; the message says what is expected and is shown as it is, one line."""


class StartupError(SecureLinkError, RuntimeError):
    """A long-running command cannot start (schema not current, a listener refused, ARI credentials wrong): the
    message says what to fix; `securelink` prints it and exits non-zero."""


class KeyFileError(SecureLinkError):
    """A file that holds a key (or a certificate) cannot be used. Messages name the file, never its content."""


class ProtocolError(SecureLinkError):
    """A peer answered badly, refused, or did not answer (ARI, AMI, FastAGI, the device API)."""


class VerificationError(SecureLinkError):
    """A cryptographic check failed. Messages never hold key material."""

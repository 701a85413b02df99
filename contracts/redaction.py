"""Bearer tokens never leave through a diagnostic copy.

A dead letter keeps the first bytes of the record it sets aside (contracts/limits.py,
`DEAD_LETTER_PREFIX_BYTES`), and the dead letter is stored in the audit store for
7 years. A record that carries a PoA (an `ActionRequested`'s `poa`, a `PoaIssued`'s
`token`) would put a live bearer token there. `mask_tokens` overwrites every run that
looks like a JWS in compact form, or the start of one cut off by the prefix, with
`*` of the same length: offsets and sizes stay, the token does not. The record's
full SHA-256 in the dead letter still identifies it.

Anything that starts like a base64url-encoded JSON object (`eyJ`, which is `{"`) is
masked, so an innocent value is at worst masked too: the prefix is for diagnosis only.
"""

from __future__ import annotations

import re

__all__ = ["mask_tokens"]

# A base64url JSON header, then up to two more dot-separated base64url segments; any
# of them may be cut short where the prefix ends.
_JWS_LIKE = re.compile(rb"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}")


def mask_tokens(data: bytes) -> bytes:
    """`data` with every JWS-like run replaced by `*` of the same length."""
    return _JWS_LIKE.sub(lambda match: b"*" * len(match.group(0)), data)

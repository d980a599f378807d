"""How a stored value (JSON, as the HTTP API writes it) reads over RESP (a bulk string),
and how a RESP bulk string is stored, so either protocol reads what the other wrote.

RESP -> stored JSON:
  * a canonical 64-bit integer ("10", "-3", not "010" or "+1") is stored as the JSON
    integer: the same bytes, and INCR/HTTP /incr work on it (Redis also keeps such strings
    as integers);
  * any other valid UTF-8 is stored as a JSON string;
  * bytes that are not UTF-8 as {"$bytes": "<base64>"}.
Stored JSON -> RESP:
  * a JSON string reads as its text (UTF-8), without the quotes;
  * {"$bytes": "<base64>"} (exactly that one member, valid base64) as the decoded bytes;
  * anything else (numbers, true/false/null, arrays, objects) as its compact JSON text.
"""

from __future__ import annotations

import base64
import binascii
import re

import orjson

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_CANONICAL_INT = re.compile(rb"-?[1-9][0-9]{0,18}|0")
_BYTES_PREFIX = b'{"$bytes":"'


def canonical_int(raw: bytes) -> int | None:
    """raw as Redis's string2ll reads it (no sign '+', no leading zeros, no spaces), or None."""
    if _CANONICAL_INT.fullmatch(raw) is None:
        return None
    number = int(raw)
    return number if INT64_MIN <= number <= INT64_MAX else None


def to_stored(raw: bytes) -> bytes:
    """A RESP argument as the JSON the store keeps."""
    if canonical_int(raw) is not None:
        return bytes(raw)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return b'{"$bytes":"%b"}' % base64.b64encode(raw)
    return orjson.dumps(text)


def to_resp(stored: bytes) -> bytes:
    """A stored JSON value as the bytes a RESP client reads."""
    first = stored[:1]
    if first == b'"':
        if b"\\" not in stored:  # no escapes: the bytes between the quotes are the text
            return stored[1:-1]
        text = orjson.loads(stored)
        assert isinstance(text, str)
        return text.encode()
    if first == b"{" and stored.startswith(_BYTES_PREFIX):
        decoded = _bytes_member(stored)
        if decoded is not None:
            return decoded
    return stored


def _bytes_member(stored: bytes) -> bytes | None:
    try:
        value = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(value, dict) and len(value) == 1
            and isinstance(value.get("$bytes"), str)):
        return None
    try:
        return base64.b64decode(value["$bytes"], validate=True)
    except (binascii.Error, ValueError):
        return None

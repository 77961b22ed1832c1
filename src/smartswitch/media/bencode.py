"""Bencode, the dictionary encoding of rtpengine's ng control protocol.

The grammar (BitTorrent BEP 3, which rtpengine's docs/ng_control_protocol.md refers to)::

    integer    = "i" ["-"] digits "e"        no leading zero, no "-0"
    string     = length ":" bytes            length in decimal, no leading zero
    list       = "l" *value "e"
    dictionary = "d" *(string value) "e"

Strings are bytes on the wire. We hand them to Python as ``str`` decoded from UTF-8 with
``surrogateescape``, so that any byte sequence survives a decode and encode unchanged (an SDP
body from rtpengine goes back onto the wire byte for byte). Dictionary keys are strings; the
encoder writes them sorted, as the standard asks (rtpengine accepts any order).

The decoder is strict: anything outside the grammar, trailing bytes, or nesting deeper than
:data:`MAX_DEPTH` raises :class:`BencodeError` — never another exception, whatever the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

__all__ = ["MAX_DEPTH", "BencodeError", "Value", "decode", "encode"]

Value: TypeAlias = "int | str | bytes | list[Value] | dict[str, Value]"
"""What a bencoded document holds (``bytes`` only on the way in: the decoder gives ``str``)."""

MAX_DEPTH = 64  # rtpengine's answers nest about six deep (query: tags, medias, streams, stats)
_MAX_LENGTH_DIGITS = 10  # a string longer than 9 999 999 999 bytes is not in a datagram


class BencodeError(ValueError):
    """The bytes are not one well-formed bencoded value; ``offset`` is where reading stopped."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at byte {offset}")
        self.reason = reason
        self.offset = offset


def encode(value: Value | Mapping[str, Value] | Sequence[Value]) -> bytes:
    """The bencoding of ``value``: int, str (as UTF-8), bytes, lists/tuples, dicts with str keys.

    ``bool`` and ``None`` are refused (bencode has neither; rtpengine spells booleans as the
    strings "yes"/"no" or as flags in a list).
    """
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("bencode: nested deeper than MAX_DEPTH")
    if isinstance(value, bool) or value is None:
        raise TypeError(f"bencode has no {type(value).__name__}: {value!r}")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, Mapping):
        out.append(b"d")
        items: list[tuple[bytes, object]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"bencode dictionary keys are strings, not {key!r}")
            items.append((key.encode("utf-8", "surrogateescape"), item))
        items.sort(key=lambda pair: pair[0])
        for raw_key, item in items:
            out.append(b"%d:" % len(raw_key))
            out.append(raw_key)
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}: {value!r}")


def decode(data: bytes) -> Value:
    """The single value ``data`` holds; :class:`BencodeError` if it holds anything else."""
    data = bytes(data)
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes after the value", end)
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested deeper than MAX_DEPTH", pos)
    if pos >= len(data):
        raise BencodeError("truncated: a value was expected", pos)
    lead = data[pos]
    if lead == 0x69:  # "i"
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError("integer without its closing 'e'", pos)
        return _integer(data[pos + 1 : end], pos + 1), end + 1
    if 0x30 <= lead <= 0x39:  # a digit: a string's length
        raw, end = _string(data, pos)
        return raw.decode("utf-8", "surrogateescape"), end
    if lead == 0x6C:  # "l"
        items: list[Value] = []
        pos += 1
        while True:
            if pos >= len(data):
                raise BencodeError("list without its closing 'e'", pos)
            if data[pos] == 0x65:
                return items, pos + 1
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
    if lead == 0x64:  # "d"
        mapping: dict[str, Value] = {}
        pos += 1
        while True:
            if pos >= len(data):
                raise BencodeError("dictionary without its closing 'e'", pos)
            if data[pos] == 0x65:
                return mapping, pos + 1
            if not 0x30 <= data[pos] <= 0x39:
                raise BencodeError("dictionary key is not a string", pos)
            raw_key, pos = _string(data, pos)
            key = raw_key.decode("utf-8", "surrogateescape")
            if key in mapping:
                raise BencodeError(f"dictionary key {key!r} given twice", pos)
            mapping[key], pos = _decode(data, pos, depth + 1)
    raise BencodeError(f"unexpected byte {lead:#04x}", pos)


def _integer(text: bytes, offset: int) -> int:
    digits = text[1:] if text.startswith(b"-") else text
    if not digits or not digits.isdigit() or len(digits) > 40:
        raise BencodeError("malformed integer", offset)
    if digits.startswith(b"0") and (len(digits) > 1 or text.startswith(b"-")):
        raise BencodeError("integer with a leading zero or '-0'", offset)
    return int(text)


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    colon = data.find(b":", pos, pos + _MAX_LENGTH_DIGITS + 1)
    if colon < 0:
        raise BencodeError("string length without ':'", pos)
    digits = data[pos:colon]
    if not digits.isdigit() or (digits.startswith(b"0") and len(digits) > 1):
        raise BencodeError("malformed string length", pos)
    start = colon + 1
    end = start + int(digits)
    if end > len(data):
        raise BencodeError("string runs past the end of the data", pos)
    return data[start:end], end

"""Bencode: the examples of rtpengine's ng documentation, strict decoding, round trips, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartswitch.media.bencode import MAX_DEPTH, BencodeError, Value, decode, encode


def test_the_ng_documentation_examples() -> None:
    # docs/ng_control_protocol.md: "5323_1 d7:command4:pinge" / "5323_1 d6:result4:ponge"
    assert encode({"command": "ping"}) == b"d7:command4:pinge"
    assert decode(b"d6:result4:ponge") == {"result": "pong"}


def test_each_type() -> None:
    assert encode(0) == b"i0e"
    assert encode(-42) == b"i-42e"
    assert encode("") == b"0:"
    assert encode("é") == b"2:\xc3\xa9"
    assert encode(b"\x00\xff") == b"2:\x00\xff"
    assert encode(["a", 1, []]) == b"l1:ai1elee"
    assert encode(("x",)) == b"l1:xe"
    assert encode({}) == b"de"


def test_dictionary_keys_are_written_sorted() -> None:
    assert encode({"sdp": "x", "call-id": "c", "command": "offer"}) == (
        b"d7:call-id1:c7:command5:offer3:sdp1:xe"
    )


def test_strings_come_back_as_text_and_any_bytes_survive() -> None:
    raw = bytes(range(256))
    value = decode(encode(raw))
    assert isinstance(value, str)
    assert encode(value) == encode(raw)


def test_query_answer_shape() -> None:
    data = b"d6:totalsd3:RTPd7:packetsi100e5:bytesi17200e6:errorsi0eee6:result2:oke"
    assert decode(data) == {
        "totals": {"RTP": {"packets": 100, "bytes": 17200, "errors": 0}},
        "result": "ok",
    }


@pytest.mark.parametrize("value", [True, None, 1.5, {1: "a"}, {"a": object()}])
def test_what_bencode_cannot_say_is_refused(value: object) -> None:
    with pytest.raises(TypeError):
        encode(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i",
        b"i12",
        b"ie",
        b"i-e",
        b"i-0e",
        b"i03e",
        b"i1.5e",
        b"i\xb2e",
        b"5:abc",
        b"05:abcde",
        b"-1:a",
        b"3abc",
        b"l",
        b"li1e",
        b"d",
        b"d3:keye",
        b"di1ei2ee",
        b"d1:ai1e1:ai2ee",
        b"x",
        b"i1ei2e",
        b"de ",
        b"l" * (MAX_DEPTH + 5) + b"e" * (MAX_DEPTH + 5),
        b"99999999999:a",
    ],
)
def test_malformed_is_a_bencode_error(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


def test_error_says_where() -> None:
    with pytest.raises(BencodeError) as info:
        decode(b"d6:result2:oke!")
    assert info.value.offset == 14 and "trailing" in str(info.value)


VALUES: st.SearchStrategy[Value] = st.recursive(
    st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)


@settings(max_examples=100)
@given(VALUES)
def test_round_trip(value: Value) -> None:
    assert decode(encode(value)) == value


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_decode_raises_only_bencode_error(data: bytes) -> None:
    with contextlib.suppress(BencodeError):
        decode(data)


@settings(max_examples=100)
@given(VALUES, st.integers(min_value=0, max_value=500), st.binary(max_size=4))
def test_fuzz_mutated_documents(value: Value, at: int, junk: bytes) -> None:
    data = encode(value)
    at %= len(data) + 1
    with contextlib.suppress(BencodeError):
        decode(data[:at] + junk + data[at + 1 :])

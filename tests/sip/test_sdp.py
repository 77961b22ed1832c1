"""SDP: real bodies from real endpoints round-trip and read right; malformed ones are refused with
the status to answer; no input makes the parser raise anything but SdpError.

The vectors are files in ``tests/vectors/sdp`` (good) and ``tests/vectors/sdp/bad`` (made by
``tests/vectors/sdp/generate.py``, which says where each comes from).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartswitch.sip.sdp import (
    MAX_BODY,
    Attribute,
    Bandwidth,
    Codec,
    Connection,
    Field,
    Media,
    Origin,
    SdpError,
    SessionDescription,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "sdp"
GOOD = sorted(path.stem for path in VECTORS.glob("*.sdp"))


def load(name: str) -> bytes:
    return (VECTORS / f"{name}.sdp").read_bytes()


def parse(name: str) -> SessionDescription:
    return SessionDescription.parse(load(name))


def load_bad(name: str) -> bytes:
    path = VECTORS / "bad" / name
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("name", GOOD)
def test_good_vector_round_trips_byte_for_byte(name: str) -> None:
    data = load(name)
    assert data.endswith(b"\r\n") and b"\r\n" in data  # .gitattributes kept the CRLF
    assert bytes(SessionDescription.parse(data)) == data


@pytest.mark.parametrize("name", GOOD)
def test_good_vector_parses_from_text_and_from_lf(name: str) -> None:
    data = load(name)
    text = data.decode()
    assert str(SessionDescription.parse(text)) == text
    assert bytes(SessionDescription.parse(data.replace(b"\r\n", b"\n"))) == data


def test_blank_lines_and_a_missing_last_crlf_are_tolerated() -> None:
    data = load("sipp_uac_offer")
    assert bytes(SessionDescription.parse(data.rstrip(b"\r\n"))) == data
    assert bytes(SessionDescription.parse(data + b"\r\n\r\n")) == data


def test_copy_is_deep() -> None:
    sd = parse("asterisk_offer")
    other = sd.copy()
    other.media[0].formats.remove("0")
    assert sd.media[0].formats == ["8", "0", "101"]


# --------------------------------------------------------------------------------------------
# What the fields read


def test_sipp_offer_fields() -> None:
    sd = parse("sipp_uac_offer")
    assert sd.version == 0
    assert sd.origin == Origin("user1", "53655765", "2353687637", "IN", "IP4", "127.0.77.21")
    assert sd.name == "-"
    assert sd.connection == Connection("IP4", "127.0.77.21")
    assert sd.lines == [Connection("IP4", "127.0.77.21"), Field("t", "0 0")]
    (audio,) = sd.media
    assert (audio.kind, audio.port, audio.port_count, audio.proto) == (
        "audio",
        16000,
        None,
        "RTP/AVP",
    )
    assert audio.formats == ["0"]
    assert audio.attributes == [Attribute("rtpmap", "0 PCMU/8000")]
    assert audio.codecs() == [Codec(0, "PCMU", 8000, None)]
    endpoint = sd.endpoint(audio)
    assert (endpoint.address, endpoint.port, endpoint.addrtype) == ("127.0.77.21", 16000, "IP4")
    assert endpoint.rtcp_port is None and not endpoint.rtcp_mux
    assert sd.direction_of(audio) == "sendrecv"
    assert not sd.is_on_hold(audio)


def test_sipp_pcap_offer_has_dtmf_by_rtpmap_with_its_fmtp() -> None:
    (audio,) = parse("sipp_uac_pcap_offer").media
    assert audio.codecs() == [
        Codec(8, "PCMA", 8000, None),
        Codec(101, "telephone-event", 8000, None, "0-11,16"),
    ]
    assert [codec.auxiliary for codec in audio.codecs()] == [False, True]


def test_rtpengine_answer_has_its_rtcp_port() -> None:
    sd = parse("rtpengine_offer")
    (audio,) = sd.media
    assert audio.rtcp == (30521, None)
    assert sd.endpoint(audio).rtcp_port == 30521
    assert audio.direction == "sendrecv"


def test_chrome_offer_ice_dtls_rtcp_mux() -> None:
    sd = parse("chrome_webrtc_offer")
    assert sd.connection is None
    assert sd.attribute("group") == "BUNDLE audio"
    (audio,) = sd.media
    assert audio.proto == "UDP/TLS/RTP/SAVPF" and audio.is_rtp
    assert audio.connection == Connection("IP4", "192.168.99.58")
    assert sd.connection_of(audio) == audio.connection
    candidates = [a.value for a in audio.attributes if a.name == "candidate"]
    assert len(candidates) == 4
    assert candidates[0] is not None and "2a02:a03f:3eb0:e000:b0aa:d60a:cff2:933c" in candidates[0]
    assert audio.attribute("fingerprint") == (
        "sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC"
    )
    assert audio.attribute("setup") == "actpass"
    assert audio.attribute("ice-ufrag") == "5+Ix"
    assert audio.rtcp_mux
    assert audio.rtcp == (9, Connection("IP4", "0.0.0.0"))
    codecs = audio.codecs()
    assert len(codecs) == 13
    assert codecs[0] == Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1")
    assert codecs[-1] == Codec(126, "telephone-event", 8000, None)


def test_firefox_offer_session_level_direction_and_rtcp_address() -> None:
    sd = parse("firefox_webrtc_offer")
    (audio,) = sd.media
    assert sd.has("ice-options") and sd.attribute("ice-options") == "trickle"
    assert audio.rtcp == (38612, Connection("IP4", "192.168.99.58"))
    assert audio.has("end-of-candidates")
    assert audio.codecs()[1] == Codec(9, "G722", 8000, 1)


def test_freeswitch_answer_direction_from_nowhere_is_sendrecv() -> None:
    sd = parse("freeswitch_webrtc_answer")
    (audio,) = sd.media
    assert audio.direction is None
    assert sd.direction_of(audio) == "sendrecv"
    assert audio.ptime == 20.0
    assert sd.endpoint(audio).address == "1.2.3.4"


def test_asterisk_offer_session_bandwidth_and_video() -> None:
    sd = parse("asterisk_offer")
    assert Bandwidth("CT", 384) in sd.lines
    audio, video = sd.media
    assert [codec.name for codec in audio.codecs()] == ["PCMA", "PCMU", "telephone-event"]
    assert video.kind == "video" and video.codecs()[0] == Codec(31, "H261", 90000, None)


def test_asterisk_srtp_crypto_is_kept_opaque() -> None:
    (audio,) = parse("asterisk_srtp_ice_offer").media
    assert audio.proto == "RTP/SAVPF"
    assert audio.attribute("crypto") == (
        "1 AES_CM_128_HMAC_SHA1_80 inline:zdmWp34CwhBMFUrpaopDnkgiRpasmgOCx3oylii0"
    )
    assert audio.attribute("maxptime") == "150"


def test_cisco_gateway_codecs_and_media_connection() -> None:
    sd = parse("cisco_gateway_offer")
    (audio,) = sd.media
    assert [(codec.payload_type, codec.name) for codec in audio.codecs()] == [
        (18, "G729"),
        (8, "PCMA"),
        (0, "PCMU"),
        (4, "G723"),
        (3, "GSM"),
        (125, "X-CCD"),
        (101, "telephone-event"),
        (19, "CN"),
    ]
    assert audio.codecs()[0].fmtp == "annexb=yes"
    assert audio.codecs()[3].fmtp == "bitrate=5.3;annexa=no"
    assert audio.attribute("direction") == "passive"  # Cisco's COMEDIA, not a=sendrecv & co
    assert sd.direction_of(audio) == "sendrecv"


def test_cisco_ipv6_anat() -> None:
    sd = parse("cisco_ipv6_anat_offer")
    assert sd.origin.addrtype == "IP6"
    assert sd.connection == Connection("IP6", "2208:1:1:1:1:1:1:1115")
    first, second = sd.endpoints()
    assert (first.addrtype, first.address, first.port) == ("IP6", "2208:1:1:1:1:1:1:1115", 17836)
    assert (second.addrtype, second.address, second.port) == ("IP4", "9.45.36.111", 18938)
    assert sd.media[0].attribute("mid") == "1" + " " * 48  # as the gateway sent it


def test_linphone_offer_speex_and_dynamic_video() -> None:
    audio, video = parse("linphone_offer").media
    assert audio.codecs()[:2] == [
        Codec(111, "speex", 16000, None, "vbr=on"),
        Codec(110, "speex", 8000, None, "vbr=on"),
    ]
    assert audio.codecs()[2] == Codec(3, "GSM", 8000, 1)  # static, no rtpmap
    assert video.codecs()[0].fmtp == "profile-level-id=3"


def test_rfc4317_offer_answer_with_host_names() -> None:
    offer = parse("rfc4317_2_1_offer")
    answer = parse("rfc4317_2_1_answer")
    assert offer.name == ""
    assert offer.connection == Connection("IP4", "host.atlanta.example.com")
    assert [m.port for m in answer.media] == [49174, 49170]
    assert answer.media[1].codecs() == [Codec(32, "MPV", 90000, None)]


def test_hold_by_direction_and_by_zero_address() -> None:
    offer = parse("rfc4317_3_1_hold_offer")
    answer = parse("rfc4317_3_1_hold_answer")
    assert offer.direction_of(offer.media[0]) == "sendonly" and offer.is_on_hold(offer.media[0])
    assert answer.direction_of(answer.media[0]) == "recvonly"
    assert not answer.is_on_hold(answer.media[0])
    inactive = parse("inactive_answer")
    assert inactive.media[0].direction == "inactive" and inactive.is_on_hold(inactive.media[0])
    old = parse("hold_c0_offer")
    assert old.connection is not None and old.connection.is_unspecified
    assert old.is_on_hold(old.media[0])
    assert old.direction_of(old.media[0]) == "sendrecv"


def test_rfc8866_example_static_payload_types_and_media_ipv6() -> None:
    sd = parse("rfc8866_example")
    assert [line.type for line in sd.lines if isinstance(line, Field)] == ["i", "u", "e", "p", "t"]
    first, second, video = sd.media
    assert first.codecs() == [Codec(0, "PCMU", 8000, 1)]
    assert first.attributes == []
    assert sd.endpoint(second).address == "198.51.100.1"
    assert sd.endpoint(video).address == "2001:db8::2"
    assert video.codecs() == [Codec(99, "h263-1998", 90000, None)]


def test_every_session_field() -> None:
    sd = parse("all_session_fields")
    fields = {line.type: line.value for line in sd.lines if isinstance(line, Field)}
    assert fields == {
        "i": "A Seminar on the session description protocol",
        "u": "http://www.example.com/seminars/sdp.pdf",
        "e": "j.doe@example.com (Jane Doe)",
        "p": "+1 617 555-6011",
        "t": "2873397496 2873404696",
        "r": "604800 3600 0 90000",
        "z": "2882844526 -1h 2898848070 0",
        "k": "prompt",
    }
    assert sd.connection is not None and sd.connection.host == "224.2.17.12"
    assert sd.connection.address == "224.2.17.12/127"
    assert Bandwidth("AS", 128) in sd.lines
    audio, video, whiteboard = sd.media
    assert audio.lines == [Field("i", "the voice"), Bandwidth("AS", 64), Field("k", "prompt")]
    assert sd.direction_of(audio) == "recvonly"  # from the session level
    assert (video.port, video.port_count) == (51372, 2)
    assert whiteboard.proto == "udp" and whiteboard.formats == ["wb"] and not whiteboard.is_rtp
    assert whiteboard.codecs() == []


def test_unknown_type_letter_in_a_media_section_is_kept() -> None:
    sd = parse("gb28181_offer")
    (video,) = sd.media
    assert video.lines[-1] == Field("y", "0100000001")
    assert video.codecs()[0] == Codec(96, "PS", 90000, None)


def test_dynamic_payload_type_without_rtpmap_has_no_name() -> None:
    data = load("sipp_uac_offer").replace(b"RTP/AVP 0", b"RTP/AVP 0 96")
    (audio,) = SessionDescription.parse(data).media
    assert audio.codecs()[1] == Codec(96, None, None)
    assert not audio.codecs()[1].matches("PCMU")


# --------------------------------------------------------------------------------------------
# Editing


def test_keep_codecs_removes_formats_and_their_lines() -> None:
    sd = parse("chrome_webrtc_offer")
    sd.keep_codecs(["PCMU", "telephone-event/8000"])
    (audio,) = sd.media
    assert audio.formats == ["0", "126"]
    rtpmaps = [a.value for a in audio.attributes if a.name == "rtpmap"]
    assert rtpmaps == ["0 PCMU/8000", "126 telephone-event/8000"]
    assert not audio.has("rtcp-fb") and not audio.has("fmtp")
    assert audio.has("candidate")  # everything else stays
    again = SessionDescription.parse(bytes(sd))
    assert [c.name for c in again.media[0].codecs()] == ["PCMU", "telephone-event"]


def test_keep_codecs_by_name_is_case_insensitive_and_rate_specific() -> None:
    audio = parse("chrome_webrtc_offer").media[0]
    kept = audio.keep_codecs(["pcma", "ISAC/32000", "CN/8000"])
    assert [(c.payload_type, c.name) for c in kept] == [(104, "ISAC"), (8, "PCMA"), (13, "CN")]


def test_keep_codecs_disables_a_media_left_without_voice() -> None:
    sd = parse("asterisk_offer")
    sd.keep_codecs(["PCMA", "telephone-event"])
    audio, video = sd.media
    assert audio.formats == ["8", "101"] and audio.port == 18822
    assert video.port == 0 and video.disabled and video.formats == ["31"]
    assert bytes(sd).count(b"m=video 0 RTP/AVP 31\r\n") == 1


def test_keep_codecs_with_nothing_in_common_is_488_and_changes_nothing() -> None:
    sd = parse("sipp_uac_pcap_offer")
    with pytest.raises(SdpError) as info:
        sd.keep_codecs(["G729", "telephone-event"])
    assert info.value.status == 488
    assert bytes(sd) == load("sipp_uac_pcap_offer")


def test_keep_codecs_only_dtmf_left_is_no_codec() -> None:
    media = parse("sipp_uac_pcap_offer").media[0]
    assert media.keep_codecs(["telephone-event"]) == []
    assert media.port == 0


def test_set_connection_direction_and_origin_version() -> None:
    sd = parse("chrome_webrtc_offer")
    sd.connection = Connection("IP4", "203.0.113.5")
    assert sd.lines[0] == Connection("IP4", "203.0.113.5")  # before t= (RFC 8866 order)
    audio = sd.media[0]
    audio.connection = Connection("IP6", "2001:db8::5")
    assert audio.lines[0] == Connection("IP6", "2001:db8::5")
    audio.connection = None
    assert sd.connection_of(audio) == Connection("IP4", "203.0.113.5")
    audio.direction = "inactive"
    assert audio.direction == "inactive" and audio.attributes[-1] == Attribute("inactive")
    assert [a.name for a in audio.attributes].count("sendrecv") == 0
    with pytest.raises(ValueError):
        audio.direction = "sideways"
    sd.origin = sd.origin.next_version()
    assert sd.origin.session_version == "3"
    reread = SessionDescription.parse(bytes(sd))
    assert reread.endpoint(reread.media[0]).address == "203.0.113.5"


def test_remove_attributes_at_both_levels() -> None:
    sd = parse("chrome_webrtc_offer")
    sd.remove_attributes("group")
    sd.media[0].remove_attributes("candidate")
    assert not sd.has("group") and sd.has("msid-semantic")
    assert not sd.media[0].has("candidate") and sd.media[0].has("ice-ufrag")
    assert b"a=candidate" not in bytes(sd) and b"a=group" not in bytes(sd)


def test_media_connection_goes_after_media_title() -> None:
    media = Media("audio", 1000, "RTP/AVP", ["0"], [Field("i", "voice"), Attribute("sendrecv")])
    media.connection = Connection("IP4", "192.0.2.1")
    assert media.lines == [
        Field("i", "voice"),
        Connection("IP4", "192.0.2.1"),
        Attribute("sendrecv"),
    ]
    media.connection = Connection("IP4", "192.0.2.2")
    assert media.lines[1] == Connection("IP4", "192.0.2.2") and len(media.lines) == 3


def test_write_a_new_description() -> None:
    sd = SessionDescription(
        Origin("-", "1", "1", "IN", "IP4", "192.0.2.1"),
        lines=[Connection("IP4", "192.0.2.1"), Field("t", "0 0")],
        media=[Media("audio", 4000, "RTP/AVP", ["8"], [Attribute("rtpmap", "8 PCMA/8000")])],
    )
    assert str(sd) == (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )


# --------------------------------------------------------------------------------------------
# Bad vectors: each refused with its status

BAD: dict[str, int] = {
    "attribute_name_space.sdp": 488,
    "b_not_number.sdp": 488,
    "binary_junk.sdp": 400,
    "c_bad_address.sdp": 488,
    "c_bad_ip6.sdp": 488,
    "c_ip6_in_ip4.sdp": 488,
    "c_missing_address.sdp": 488,
    "c_unknown_addrtype.sdp": 488,
    "c_unknown_nettype.sdp": 488,
    "empty.sdp": 400,
    "html.sdp": 400,
    "huge_1mb.sdp.gz": 488,
    "json.sdp": 400,
    "line_without_equals.sdp": 488,
    "m_no_format.sdp": 488,
    "m_payload_type_200.sdp": 488,
    "m_port_not_numeric.sdp": 488,
    "m_port_superscript.sdp": 488,
    "m_port_too_big.sdp": 488,
    "m_two_fields.sdp": 488,
    "missing_o.sdp": 488,
    "missing_s.sdp": 488,
    "missing_t.sdp": 488,
    "missing_v.sdp": 488,
    "no_connection.sdp": 488,
    "nul_in_line.sdp": 488,
    "o_four_fields.sdp": 488,
    "o_version_word.sdp": 488,
    "only_crlf.sdp": 400,
    "ptime_word.sdp": 488,
    "rtcp_port_word.sdp": 488,
    "rtpmap_no_rate.sdp": 488,
    "rtpmap_rate_word.sdp": 488,
    "session_line_in_media.sdp": 488,
    "sip_message_not_body.sdp": 400,
    "space_before_equals.sdp": 488,
    "t_words.sdp": 488,
    "too_many_media.sdp": 488,
    "truncated.sdp": 488,
    "truncated_in_c.sdp": 488,
    "type_two_letters.sdp": 488,
    "upper_case_type.sdp": 488,
    "v_not_zero.sdp": 488,
    "v_twice.sdp": 488,
}

# The line each is refused at, where there is one line to blame.
BAD_LINES: dict[str, int] = {
    "missing_v.sdp": 1,
    "v_not_zero.sdp": 1,
    "o_four_fields.sdp": 2,
    "c_bad_address.sdp": 4,
    "m_port_not_numeric.sdp": 6,
    "line_without_equals.sdp": 4,
    "rtpmap_no_rate.sdp": 8,
    "too_many_media.sdp": 75,
    "truncated_in_c.sdp": 4,
}


def test_every_bad_vector_has_an_expectation() -> None:
    assert sorted(BAD) == sorted(path.name for path in (VECTORS / "bad").iterdir())


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_vector_is_refused_with_its_status(name: str) -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(load_bad(name))
    error = info.value
    assert error.status == BAD[name], error
    assert error.reason and error.reason in str(error)
    if name in BAD_LINES:
        assert error.line_number == BAD_LINES[name], error


def test_error_names_the_line() -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(load_bad("c_bad_address.sdp"))
    assert str(info.value) == "SDP line 4: bad IP4 address '999.0.2.10'"


def test_body_just_over_the_limit() -> None:
    data = load("sipp_uac_offer")
    padded = data + b"a=x:" + b"p" * (MAX_BODY - len(data) - 6) + b"\r\n"
    assert len(padded) == MAX_BODY
    SessionDescription.parse(padded)
    with pytest.raises(SdpError):
        SessionDescription.parse(padded + b"\n")


def test_not_bytes_or_text_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        SessionDescription.parse(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Fuzzing: nothing but SdpError, and what parses writes back to something that parses the same

SDP_LINE = st.builds(
    lambda kind, value: f"{kind}={value}",
    st.sampled_from("vosiuepcbtrzkamxy"),
    st.text(alphabet=st.sampled_from(list("0123456789 ./:-IPNaudioRTPAVmcpx\t\x00é")), max_size=30),
)


def _check(data: bytes | str) -> None:
    try:
        sd = SessionDescription.parse(data)
    except SdpError as error:
        assert error.status in (400, 488)
        return
    text = str(sd)
    assert str(SessionDescription.parse(text)) == text


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_bytes(data: bytes) -> None:
    _check(data)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SDP_LINE, max_size=20))
def test_fuzz_sdp_shaped_lines(lines: list[str]) -> None:
    _check("v=0\r\n" + "\r\n".join(lines))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(GOOD),
    st.integers(min_value=0, max_value=4000),
    st.integers(min_value=0, max_value=8),
    st.binary(max_size=8),
)
def test_fuzz_mutated_real_bodies(name: str, at: int, cut: int, insert: bytes) -> None:
    data = load(name)
    at %= len(data)
    _check(data[:at] + insert + data[at + cut :])

"""Writes the SDP vectors in this folder and in ``bad/`` (run: ``python tests/vectors/sdp/generate.py``).

The ``.sdp`` files are what the tests read; this script is how they were made, kept so that a
vector can be changed and rewritten byte for byte. Bodies are written here with ``\\n`` and
turned into CRLF on the way out (RFC 8866 section 5), so no editor decides the line ends;
``.gitattributes`` keeps them as they are (``tests/vectors/** -text``).

Where each good body comes from:

- ``sipp_*``: captured on the wire from sipp 3.6.1's built-in scenarios (``-sn uac``,
  ``-sn uac_pcap``, ``-sn uas``) on this project's test machines (addresses 127.0.77.x).
- ``rtpengine_offer``: what rtpengine 10.5 returned for the sipp ``uac_pcap`` offer.
- ``chrome_webrtc_offer``, ``firefox_webrtc_offer``, ``freeswitch_webrtc_answer``: the bodies
  in aiortc's tests/test_sdp.py (ICE candidates over IPv4 and IPv6, DTLS-SRTP fingerprints,
  rtcp-mux, BUNDLE, ssrc lines).
- ``asterisk_offer``: Asterisk 1.6.2 (FreePBX) audio and video with a session ``b=CT``;
  ``asterisk_srtp_ice_offer``: Asterisk 16.6.2 to a WebRTC phone (SDES crypto, ICE, rtcp-mux).
- ``cisco_gateway_offer``: a Cisco IOS gateway with seven codecs (G.729 annex B, G.723 fmtp,
  X-CCD, CN) and a media-level ``c=``; ``cisco_ipv6_anat_offer``: a Cisco IOS 15 IPv6 offer
  with ANAT alternatives (``a=group:ANAT``, IPv6 and IPv4 media), whose ``a=mid`` lines carry
  trailing spaces as the gateway sent them.
- ``linphone_offer``: Linphone (belle-sip's test body): speex, audio and video.
- ``rfc4317_*``: RFC 4317 (SDP offer/answer examples) sections 2.1 and 3.1 (hold: sendonly
  answered recvonly).
- ``inactive_answer``: an answer putting the stream inactive (RFC 3264 section 8.4).
- ``hold_c0_offer``: the RFC 2543 hold still sent by old phones: ``c=IN IP4 0.0.0.0``.
- ``rfc8866_example``: RFC 8866 section 5's example (i=, u=, e=, p=, an IPv6 media c=).
- ``all_session_fields``: RFC 4566 section 5's example (multicast c=, recvonly) with every
  other type RFC 8866 defines added (b=, r=, z=, k=, a media i=, a port count).
- ``gb28181_offer``: a GB/T 28181 camera offer whose media section ends with a ``y=`` line,
  a type letter RFC 8866 does not define, which must come back unchanged.

The bad ones (``bad/``) each break one rule; the status each must be refused with is in
``tests/sip/test_sdp.py``. ``huge_1mb.sdp.gz`` is stored compressed (1 MiB of attribute lines
compresses to a few KiB); the test reads it decompressed.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).parent


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


GOOD: dict[str, bytes] = {}
BAD: dict[str, bytes] = {}

GOOD["sipp_uac_offer"] = crlf(
    "v=0\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.77.21\n"
    "s=-\n"
    "c=IN IP4 127.0.77.21\n"
    "t=0 0\n"
    "m=audio 16000 RTP/AVP 0\n"
    "a=rtpmap:0 PCMU/8000\n"
)
GOOD["sipp_uac_pcap_offer"] = crlf(
    "v=0\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.77.21\n"
    "s=-\n"
    "c=IN IP4 127.0.77.21\n"
    "t=0 0\n"
    "m=audio 16000 RTP/AVP 8 101\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-11,16\n"
)
GOOD["sipp_uas_answer"] = crlf(
    "v=0\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.77.22\n"
    "s=-\n"
    "c=IN IP4 127.0.77.22\n"
    "t=0 0\n"
    "m=audio 16100 RTP/AVP 0\n"
    "a=rtpmap:0 PCMU/8000\n"
)
GOOD["rtpengine_offer"] = crlf(
    "v=0\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.77.1\n"
    "s=-\n"
    "c=IN IP4 127.0.77.1\n"
    "t=0 0\n"
    "m=audio 30520 RTP/AVP 8 101\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-11,16\n"
    "a=sendrecv\n"
    "a=rtcp:30521\n"
)
GOOD["chrome_webrtc_offer"] = crlf(
    "v=0\n"
    "o=- 863426017819471768 2 IN IP4 127.0.0.1\n"
    "s=-\n"
    "t=0 0\n"
    "a=group:BUNDLE audio\n"
    "a=msid-semantic: WMS TF6VRif1dxuAfe5uefrV2953LhUZt1keYvxU\n"
    "m=audio 45076 UDP/TLS/RTP/SAVPF 111 103 104 9 0 8 106 105 13 110 112 113 126\n"
    "c=IN IP4 192.168.99.58\n"
    "a=rtcp:9 IN IP4 0.0.0.0\n"
    "a=candidate:2665802302 1 udp 2122262783 2a02:a03f:3eb0:e000:b0aa:d60a:cff2:933c 38475 typ host generation 0 network-id 2 network-cost 10\n"
    "a=candidate:1039001212 1 udp 2122194687 192.168.99.58 45076 typ host generation 0 network-id 1 network-cost 10\n"
    "a=candidate:3496416974 1 tcp 1518283007 2a02:a03f:3eb0:e000:b0aa:d60a:cff2:933c 9 typ host tcptype active generation 0 network-id 2 network-cost 10\n"
    "a=candidate:1936595596 1 tcp 1518214911 192.168.99.58 9 typ host tcptype active generation 0 network-id 1 network-cost 10\n"
    "a=ice-ufrag:5+Ix\n"
    "a=ice-pwd:uK8IlylxzDMUhrkVzdmj0M+v\n"
    "a=ice-options:trickle\n"
    "a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\n"
    "a=setup:actpass\n"
    "a=mid:audio\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\n"
    "a=sendrecv\n"
    "a=rtcp-mux\n"
    "a=rtpmap:111 opus/48000/2\n"
    "a=rtcp-fb:111 transport-cc\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\n"
    "a=rtpmap:103 ISAC/16000\n"
    "a=rtpmap:104 ISAC/32000\n"
    "a=rtpmap:9 G722/8000\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:106 CN/32000\n"
    "a=rtpmap:105 CN/16000\n"
    "a=rtpmap:13 CN/8000\n"
    "a=rtpmap:110 telephone-event/48000\n"
    "a=rtpmap:112 telephone-event/32000\n"
    "a=rtpmap:113 telephone-event/16000\n"
    "a=rtpmap:126 telephone-event/8000\n"
    "a=ssrc:1944796561 cname:/vC4ULAr8vHNjXmq\n"
    "a=ssrc:1944796561 msid:TF6VRif1dxuAfe5uefrV2953LhUZt1keYvxU ec1eb8de-8df8-4956-ae81-879e5d062d12\n"
    "a=ssrc:1944796561 mslabel:TF6VRif1dxuAfe5uefrV2953LhUZt1keYvxU\n"
    "a=ssrc:1944796561 label:ec1eb8de-8df8-4956-ae81-879e5d062d12\n"
)
GOOD["firefox_webrtc_offer"] = crlf(
    "v=0\n"
    "o=mozilla...THIS_IS_SDPARTA-58.0.1 4934139885953732403 1 IN IP4 0.0.0.0\n"
    "s=-\n"
    "t=0 0\n"
    "a=sendrecv\n"
    "a=fingerprint:sha-256 EB:A9:3E:50:D7:E3:B3:86:0F:7B:01:C1:EB:D6:AF:E4:97:DE:15:05:A8:DE:7B:83:56:C7:4B:6E:9D:75:D4:17\n"
    "a=group:BUNDLE sdparta_0\n"
    "a=ice-options:trickle\n"
    "a=msid-semantic:WMS *\n"
    "m=audio 45274 UDP/TLS/RTP/SAVPF 109 9 0 8 101\n"
    "c=IN IP4 192.168.99.58\n"
    "a=candidate:0 1 UDP 2122187007 192.168.99.58 45274 typ host\n"
    "a=candidate:1 1 UDP 2122252543 2a02:a03f:3eb0:e000:b0aa:d60a:cff2:933c 47387 typ host\n"
    "a=candidate:2 1 TCP 2105458943 192.168.99.58 9 typ host tcptype active\n"
    "a=candidate:3 1 TCP 2105524479 2a02:a03f:3eb0:e000:b0aa:d60a:cff2:933c 9 typ host tcptype active\n"
    "a=candidate:0 2 UDP 2122187006 192.168.99.58 38612 typ host\n"
    "a=candidate:1 2 UDP 2122252542 2a02:a03f:3eb0:e000:b0aa:d60a:cff2:933c 54301 typ host\n"
    "a=candidate:2 2 TCP 2105458942 192.168.99.58 9 typ host tcptype active\n"
    "a=candidate:3 2 TCP 2105524478 2a02:a03f:3eb0:e000:b0aa:d60a:cff2:933c 9 typ host tcptype active\n"
    "a=sendrecv\n"
    "a=end-of-candidates\n"
    "a=extmap:1/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid\n"
    "a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1\n"
    "a=fmtp:101 0-15\n"
    "a=ice-pwd:f9b83487285016f7492197a5790ceee5\n"
    "a=ice-ufrag:403a81e1\n"
    "a=mid:sdparta_0\n"
    "a=msid:{dee771c7-671a-451e-b847-f86f8e87c7d8} {12692dea-686c-47ca-b3e9-48f38fc92b78}\n"
    "a=rtcp:38612 IN IP4 192.168.99.58\n"
    "a=rtcp-mux\n"
    "a=rtpmap:109 opus/48000/2\n"
    "a=rtpmap:9 G722/8000/1\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=setup:actpass\n"
    "a=ssrc:882128807 cname:{ed463ac5-dabf-44d4-8b9f-e14318427b2b}\n"
)
GOOD["freeswitch_webrtc_answer"] = crlf(
    "v=0\n"
    "o=FreeSWITCH 1538380016 1538380017 IN IP4 1.2.3.4\n"
    "s=FreeSWITCH\n"
    "c=IN IP4 1.2.3.4\n"
    "t=0 0\n"
    "a=msid-semantic: WMS lyNSTe6w2ijnMrDEiqTHFyhqjdAag3ys\n"
    "m=audio 16628 UDP/TLS/RTP/SAVPF 8 101\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=ptime:20\n"
    "a=fingerprint:sha-256 35:5A:BC:8E:CD:F8:CD:EB:36:00:BB:C4:C3:33:54:B5:9B:70:3C:E9:C4:33:8F:39:3C:4B:5B:5C:AD:88:12:2B\n"
    "a=setup:active\n"
    "a=rtcp-mux\n"
    "a=rtcp:16628 IN IP4 1.2.3.4\n"
    "a=ice-ufrag:75EDuLTEOkEUd3cu\n"
    "a=ice-pwd:5dvb9SbfooWc49814CupdeTS\n"
    "a=candidate:0560693492 1 udp 659136 1.2.3.4 16628 typ host generation 0\n"
    "a=end-of-candidates\n"
    "a=ssrc:2690029308 cname:rbaag6w9fGmRXQm6\n"
    "a=ssrc:2690029308 msid:lyNSTe6w2ijnMrDEiqTHFyhqjdAag3ys a0\n"
    "a=ssrc:2690029308 mslabel:lyNSTe6w2ijnMrDEiqTHFyhqjdAag3ys\n"
    "a=ssrc:2690029308 label:lyNSTe6w2ijnMrDEiqTHFyhqjdAag3ysa0\n"
)
GOOD["asterisk_offer"] = crlf(
    "v=0\n"
    "o=root 1184403247 1184403247 IN IP4 10.5.4.2\n"
    "s=Asterisk PBX 1.6.2.17.3\n"
    "c=IN IP4 10.5.4.2\n"
    "b=CT:384\n"
    "t=0 0\n"
    "m=audio 18822 RTP/AVP 8 0 101\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=ptime:20\n"
    "a=sendrecv\n"
    "m=video 14108 RTP/AVP 31 34 98\n"
    "a=rtpmap:31 H261/90000\n"
    "a=rtpmap:34 H263/90000\n"
    "a=rtpmap:98 h263-1998/90000\n"
    "a=sendrecv\n"
)
GOOD["asterisk_srtp_ice_offer"] = crlf(
    "v=0\n"
    "o=root 1652891600 1652891600 IN IP4 10.10.3.60\n"
    "s=Asterisk PBX 16.6.2\n"
    "c=IN IP4 10.10.3.60\n"
    "t=0 0\n"
    "m=audio 16574 RTP/SAVPF 0 8 3 111 9 18 101\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:zdmWp34CwhBMFUrpaopDnkgiRpasmgOCx3oylii0\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:3 GSM/8000\n"
    "a=rtpmap:111 G726-32/8000\n"
    "a=rtpmap:9 G722/8000\n"
    "a=rtpmap:18 G729/8000\n"
    "a=fmtp:18 annexb=no\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=maxptime:150\n"
    "a=ice-ufrag:583513ee437a54346b5461ed75dae425\n"
    "a=ice-pwd:3c142db12530fbea1b34a852386ab03e\n"
    "a=candidate:Ha0a033c 1 UDP 2130706431 10.10.3.60 16574 typ host\n"
    "a=candidate:Hac1f0223 1 UDP 2130706431 172.31.2.35 16574 typ host\n"
    "a=candidate:Ha0a033c 2 UDP 2130706430 10.10.3.60 16575 typ host\n"
    "a=candidate:Hac1f0223 2 UDP 2130706430 172.31.2.35 16575 typ host\n"
    "a=rtcp-mux\n"
    "a=sendrecv\n"
)
GOOD["cisco_gateway_offer"] = crlf(
    "v=0\n"
    "o=CiscoSystemsSIP-GW-UserAgent 2578 3027 IN IP4 83.211.215.216\n"
    "s=SIP Call\n"
    "c=IN IP4 62.94.199.36\n"
    "t=0 0\n"
    "m=audio 62278 RTP/AVP 18 8 0 4 3 125 101 19\n"
    "c=IN IP4 62.94.199.36\n"
    "a=rtpmap:18 G729/8000\n"
    "a=fmtp:18 annexb=yes\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:4 G723/8000\n"
    "a=fmtp:4 bitrate=5.3;annexa=no\n"
    "a=rtpmap:3 GSM/8000\n"
    "a=rtpmap:125 X-CCD/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=rtpmap:19 CN/8000\n"
    "a=direction:passive\n"
)
GOOD["cisco_ipv6_anat_offer"] = crlf(
    "v=0\n"
    "o=CiscoSystemsSIP-GW-UserAgent 7880 7375 IN IP6 2208:1:1:1:1:1:1:1115\n"
    "s=SIP Call\n"
    "c=IN IP6 2208:1:1:1:1:1:1:1115\n"
    "t=0 0\n"
    "a=group:ANAT 1 2\n"
    "m=audio 17836 RTP/AVP 0 101 19\n"
    "c=IN IP6 2208:1:1:1:1:1:1:1115\n"
    "a=mid:1                                                \n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=rtpmap:19 CN/8000\n"
    "a=ptime:20\n"
    "m=audio 18938 RTP/AVP 0 101 19\n"
    "c=IN IP4 9.45.36.111\n"
    "a=mid:2                                                \n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=rtpmap:19 CN/8000\n"
    "a=ptime:20\n"
)
GOOD["linphone_offer"] = crlf(
    "v=0\n"
    "o=jehan-mac 1239 1239 IN IP4 192.168.0.18\n"
    "s=Talk\n"
    "c=IN IP4 192.168.0.18\n"
    "t=0 0\n"
    "m=audio 7078 RTP/AVP 111 110 3 0 8 101\n"
    "a=rtpmap:111 speex/16000\n"
    "a=fmtp:111 vbr=on\n"
    "a=rtpmap:110 speex/8000\n"
    "a=fmtp:110 vbr=on\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-11\n"
    "m=video 8078 RTP/AVP 99 97 98\n"
    "a=rtpmap:99 MP4V-ES/90000\n"
    "a=fmtp:99 profile-level-id=3\n"
    "a=rtpmap:97 theora/90000\n"
    "a=rtpmap:98 H263-1998/90000\n"
    "a=fmtp:98 CIF=1;QCIF=1\n"
)
GOOD["rfc4317_2_1_offer"] = crlf(
    "v=0\n"
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\n"
    "s=\n"
    "c=IN IP4 host.atlanta.example.com\n"
    "t=0 0\n"
    "m=audio 49170 RTP/AVP 0 8 97\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:97 iLBC/8000\n"
    "m=video 51372 RTP/AVP 31 32\n"
    "a=rtpmap:31 H261/90000\n"
    "a=rtpmap:32 MPV/90000\n"
)
GOOD["rfc4317_2_1_answer"] = crlf(
    "v=0\n"
    "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com\n"
    "s=\n"
    "c=IN IP4 host.biloxi.example.com\n"
    "t=0 0\n"
    "m=audio 49174 RTP/AVP 0\n"
    "a=rtpmap:0 PCMU/8000\n"
    "m=video 49170 RTP/AVP 32\n"
    "a=rtpmap:32 MPV/90000\n"
)
GOOD["rfc4317_3_1_hold_offer"] = crlf(
    "v=0\n"
    "o=alice 2890844526 2890844527 IN IP4 host.atlanta.example.com\n"
    "s=\n"
    "c=IN IP4 host.atlanta.example.com\n"
    "t=0 0\n"
    "m=audio 49170 RTP/AVP 0 97\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:97 iLBC/8000\n"
    "a=sendonly\n"
)
GOOD["rfc4317_3_1_hold_answer"] = crlf(
    "v=0\n"
    "o=bob 2808844564 2808844565 IN IP4 host.biloxi.example.com\n"
    "s=\n"
    "c=IN IP4 host.biloxi.example.com\n"
    "t=0 0\n"
    "m=audio 49172 RTP/AVP 97\n"
    "a=rtpmap:97 iLBC/8000\n"
    "a=recvonly\n"
)
GOOD["inactive_answer"] = crlf(
    "v=0\n"
    "o=bob 2808844564 2808844566 IN IP4 192.0.2.20\n"
    "s=-\n"
    "c=IN IP4 192.0.2.20\n"
    "t=0 0\n"
    "m=audio 49172 RTP/AVP 8 101\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-15\n"
    "a=ptime:20\n"
    "a=inactive\n"
)
GOOD["hold_c0_offer"] = crlf(
    "v=0\n"
    "o=CiscoSystemsSIP-GW-UserAgent 6603 1569 IN IP4 172.18.193.120\n"
    "s=SIP Call\n"
    "c=IN IP4 0.0.0.0\n"
    "t=0 0\n"
    "m=audio 17978 RTP/AVP 18 19\n"
    "c=IN IP4 0.0.0.0\n"
    "a=rtpmap:18 G729/8000\n"
    "a=fmtp:18 annexb=no\n"
    "a=rtpmap:19 CN/8000\n"
    "a=ptime:20\n"
)
GOOD["rfc8866_example"] = crlf(
    "v=0\n"
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1\n"
    "s=Call to John Smith\n"
    "i=SDP Offer #1\n"
    "u=http://www.jdoe.example.com/home.html\n"
    "e=Jane Doe <jane@jdoe.example.com>\n"
    "p=+1 617 555-6011\n"
    "c=IN IP4 198.51.100.1\n"
    "t=0 0\n"
    "m=audio 49170 RTP/AVP 0\n"
    "m=audio 49180 RTP/AVP 0\n"
    "m=video 51372 RTP/AVP 99\n"
    "c=IN IP6 2001:db8::2\n"
    "a=rtpmap:99 h263-1998/90000\n"
)
GOOD["all_session_fields"] = crlf(
    "v=0\n"
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\n"
    "s=SDP Seminar\n"
    "i=A Seminar on the session description protocol\n"
    "u=http://www.example.com/seminars/sdp.pdf\n"
    "e=j.doe@example.com (Jane Doe)\n"
    "p=+1 617 555-6011\n"
    "c=IN IP4 224.2.17.12/127\n"
    "b=AS:128\n"
    "t=2873397496 2873404696\n"
    "r=604800 3600 0 90000\n"
    "z=2882844526 -1h 2898848070 0\n"
    "k=prompt\n"
    "a=recvonly\n"
    "a=tool:sdr 2.9\n"
    "m=audio 49170 RTP/AVP 0\n"
    "i=the voice\n"
    "b=AS:64\n"
    "k=prompt\n"
    "m=video 51372/2 RTP/AVP 99\n"
    "a=rtpmap:99 h263-1998/90000\n"
    "m=application 32416 udp wb\n"
    "a=orient:portrait\n"
)
GOOD["gb28181_offer"] = crlf(
    "v=0\n"
    "o=34020000001320000001 0 0 IN IP4 192.168.1.100\n"
    "s=Play\n"
    "c=IN IP4 192.168.1.100\n"
    "t=0 0\n"
    "m=video 6000 RTP/AVP 96 98 97\n"
    "a=recvonly\n"
    "a=rtpmap:96 PS/90000\n"
    "a=rtpmap:98 H264/90000\n"
    "a=rtpmap:97 MPEG4/90000\n"
    "y=0100000001\n"
)

# --------------------------------------------------------------------------------------------
# Bad vectors: each breaks one rule (expected statuses in tests/sip/test_sdp.py).

_BASE = (
    "v=0\n"
    "o=user1 53655765 2353687637 IN IP4 192.0.2.10\n"
    "s=-\n"
    "c=IN IP4 192.0.2.10\n"
    "t=0 0\n"
    "m=audio 16000 RTP/AVP 0 8 101\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=ptime:20\n"
)


def bad(old: str, new: str) -> bytes:
    assert old in _BASE, old
    return crlf(_BASE.replace(old, new, 1))


BAD["missing_v"] = bad("v=0\n", "")
BAD["v_not_zero"] = bad("v=0\n", "v=1\n")
BAD["v_twice"] = bad("s=-\n", "s=-\nv=0\n")
BAD["missing_o"] = bad("o=user1 53655765 2353687637 IN IP4 192.0.2.10\n", "")
BAD["o_four_fields"] = bad(
    "o=user1 53655765 2353687637 IN IP4 192.0.2.10", "o=user1 53655765 IN IP4"
)
BAD["o_version_word"] = bad("2353687637", "two")
BAD["missing_s"] = bad("s=-\n", "")
BAD["missing_t"] = bad("t=0 0\n", "")
BAD["t_words"] = bad("t=0 0", "t=now later")
BAD["m_port_not_numeric"] = bad("m=audio 16000 RTP/AVP", "m=audio sixteen RTP/AVP")
BAD["m_port_too_big"] = bad("m=audio 16000 RTP/AVP", "m=audio 70000 RTP/AVP")
BAD["m_port_superscript"] = bad("m=audio 16000 RTP/AVP", "m=audio 1\u00b2 RTP/AVP")
BAD["m_no_format"] = bad("m=audio 16000 RTP/AVP 0 8 101", "m=audio 16000 RTP/AVP")
BAD["m_payload_type_200"] = bad("RTP/AVP 0 8 101", "RTP/AVP 0 200 101")
BAD["m_two_fields"] = bad("m=audio 16000 RTP/AVP 0 8 101", "m=audio 16000")
BAD["c_bad_address"] = bad("c=IN IP4 192.0.2.10", "c=IN IP4 999.0.2.10")
BAD["c_ip6_in_ip4"] = bad("c=IN IP4 192.0.2.10", "c=IN IP4 2001:db8::1")
BAD["c_bad_ip6"] = bad("c=IN IP4 192.0.2.10", "c=IN IP6 2001:db8:::1")
BAD["c_unknown_addrtype"] = bad("c=IN IP4 192.0.2.10", "c=IN IPX 192.0.2.10")
BAD["c_unknown_nettype"] = bad("c=IN IP4 192.0.2.10", "c=ATM NSAP 47.0005.80.ffe100")
BAD["c_missing_address"] = bad("c=IN IP4 192.0.2.10", "c=IN IP4")
BAD["no_connection"] = bad("c=IN IP4 192.0.2.10\n", "")
BAD["b_not_number"] = bad("t=0 0\n", "b=AS:lots\nt=0 0\n")
BAD["rtpmap_no_rate"] = bad("a=rtpmap:8 PCMA/8000", "a=rtpmap:8 PCMA")
BAD["rtpmap_rate_word"] = bad("a=rtpmap:8 PCMA/8000", "a=rtpmap:8 PCMA/eight")
BAD["ptime_word"] = bad("a=ptime:20", "a=ptime:twenty")
BAD["rtcp_port_word"] = bad("a=ptime:20\n", "a=ptime:20\na=rtcp:next\n")
BAD["attribute_name_space"] = bad("a=ptime:20\n", "a=ptime:20\na=x y:z\n")
BAD["line_without_equals"] = bad("s=-\n", "s=-\nhello world\n")
BAD["type_two_letters"] = bad("t=0 0\n", "t=0 0\nxy=1\n")
BAD["space_before_equals"] = bad("t=0 0\n", "t =0 0\n")
BAD["upper_case_type"] = bad("t=0 0\n", "T=0 0\n")
BAD["session_line_in_media"] = bad("a=ptime:20\n", "a=ptime:20\nt=0 0\n")
BAD["truncated"] = crlf(_BASE)[: crlf(_BASE).index(b"m=audio") + 20]  # "...m=audio 16000 RTP/"
BAD["truncated_in_c"] = crlf(_BASE)[: crlf(_BASE).index(b"c=IN") + 12] + b"\r\n"
BAD["nul_in_line"] = bad("s=-", "s=a\x00b")
BAD["too_many_media"] = crlf(
    _BASE + "".join(f"m=audio {20000 + 2 * i} RTP/AVP 0\n" for i in range(100))
)
BAD["empty"] = b""
BAD["only_crlf"] = b"\r\n\r\n"
BAD["html"] = crlf("<html><body>not sdp</body></html>\n")
BAD["json"] = crlf('{"sdp": "v=0"}\n')
BAD["binary_junk"] = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(64))
BAD["sip_message_not_body"] = crlf(
    "INVITE sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1\n\n"
) + crlf(_BASE)


def huge() -> bytes:
    """1 MiB: a plausible offer padded with attribute lines, far over MAX_BODY."""
    body = crlf(_BASE)
    pad = crlf("a=x-pad:" + "p" * 90 + "\n")
    return body + pad * ((1024 * 1024 - len(body)) // len(pad) + 1)


def write() -> None:
    (HERE / "bad").mkdir(exist_ok=True)
    for folder, vectors in ((HERE, GOOD), (HERE / "bad", BAD)):
        wanted = {f"{name}.sdp" for name in vectors}
        for old in folder.glob("*.sdp"):
            if old.name not in wanted:
                old.unlink()
        for name, data in vectors.items():
            (folder / f"{name}.sdp").write_bytes(data)
    # mtime=0: the same bytes on every run
    (HERE / "bad" / "huge_1mb.sdp.gz").write_bytes(gzip.compress(huge(), mtime=0))


if __name__ == "__main__":
    write()
    sys.exit(0)

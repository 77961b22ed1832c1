"""SIP over TLS end to end (issue 14, item 3): sipp and Python's ``ssl`` client against a
billing node listening on ``tls_listen``; certificates made at test time by ``openssl``
(tests/tlscerts.py).

sipp's TLS is stunnel's (tests/e2e/stunnel.py): Debian's sipp has no ``-t l1``, so each sipp
talks TCP (``-t t1``) to a stunnel of its own that holds the party's certificate and the one
TLS connection to (or from) the node. The scenarios are rewritten to say TLS in their Via and
Contact, as a TLS user agent's would; what the node did is read on its side (the transport in
the Contact it writes, a binding's ``tls:`` source, its log) and in stunnel's log (which
certificate each side accepted, how many connections were made).

Addresses as in the other end-to-end tests: the node 127.0.0.1, the customer 127.0.0.2
(known by its ACL), the supplier 127.0.0.3, the DID provider 127.0.0.7, the phone 127.0.0.2;
127.0.0.9 is in no ACL (a customer known by its certificate alone).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartswitch.sip.framing import StreamFramer
from smartswitch.sip.message import Response, parse_message
from smartswitch.transport.tls import fingerprint
from tlscerts import Ca, Issued, fingerprint_of, make_ca

from .conftest import (
    CALLEE_IP,
    CALLER_IP,
    NODE_IP,
    SippFactory,
    StartBillingNode,
    StunnelFactory,
)
from .node import Node, wait_for
from .sipp import Sipp, SippResult, expect_final_scenario, free_port
from .stunnel import Stunnel, tls_scenario
from .test_billing import EXAMPLE, peer
from .test_registrar import DID, PHONE_IP, PROVIDER_IP, document, wait_binding

pytestmark = pytest.mark.e2e

WAIT = 10.0
UNLISTED_IP = "127.0.0.9"


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Ca
    node: Issued
    caller: Issued
    callee: Issued
    phone: Issued
    rogue: Ca
    impostor: Issued  # signed by the rogue CA, which the node does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca = make_ca(base / "ca")
    rogue = make_ca(base / "rogue", "rogue-ca")
    return Pki(
        ca=ca,
        node=ca.issue(base / "node", "node", NODE_IP),
        caller=ca.issue(base / "caller", "caller", CALLER_IP),
        callee=ca.issue(base / "callee", "callee", CALLEE_IP),
        phone=ca.issue(base / "phone", "phone", PHONE_IP),
        rogue=rogue,
        impostor=rogue.issue(base / "impostor", "impostor", CALLER_IP),
    )


def tls_config(pki: Pki, cert: Issued | None = None, **extra: Any) -> dict[str, Any]:
    cert = cert or pki.node
    return {
        "tls_listen": f"{NODE_IP}:{free_port(NODE_IP)}",
        "tls_cert": str(cert.cert),
        "tls_key": str(cert.key),
        "tls_ca": str(pki.ca.cert),
        **extra,
    }


def tls_address(node: Node) -> str:
    return str(node.spec.config["tls_listen"])


def tls_port(node: Node) -> int:
    return int(tls_address(node).rpartition(":")[2])


def _ok(result: SippResult, calls: int = 1) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()


def _client(pki: Pki, cert: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


def options(port: int, cseq: int, transport: str = "TLS") -> bytes:
    lines = [
        f"OPTIONS sip:{NODE_IP}:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} {CALLER_IP}:5061;branch=z9hG4bKtls{cseq};rport",
        f"From: <sip:probe@{CALLER_IP}>;tag=probe",
        f"To: <sip:{NODE_IP}:{port}>",
        f"Call-ID: tls-probe-{cseq}@{CALLER_IP}",
        f"CSeq: {cseq} OPTIONS",
        "Max-Forwards: 70",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


async def _exchange(
    port: int, data: bytes, context: ssl.SSLContext | None
) -> tuple[Response | None, str | None]:
    """Send ``data`` on a new connection from the caller's address; the answer (None if the
    connection closed without one) and the fingerprint of the certificate the node
    presented."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(NODE_IP, port, ssl=context, local_addr=(CALLER_IP, 0)), WAIT
    )
    presented = None
    if context is not None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        presented = fingerprint(der)
    writer.write(data)
    framer = StreamFramer()
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), WAIT)
            if not chunk:
                return None, presented
            messages = framer.feed(chunk)
            if messages:
                response = parse_message(messages[0], require_content_length=True)
                assert isinstance(response, Response)
                return response, presented
    except (ssl.SSLError, ConnectionResetError):
        return None, presented
    finally:
        writer.close()


def exchange(
    port: int, data: bytes, context: ssl.SSLContext | None
) -> tuple[Response | None, str | None]:
    return asyncio.run(_exchange(port, data, context))


# --------------------------------------------------------------------------- calls


def _example(callee_address: str, transport: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    carrier = peer(doc, "carrier-a")
    carrier["address"] = callee_address
    carrier["transport"] = transport
    doc["peers"] = [p for p in doc["peers"] if p["name"] != "carrier-b"]
    doc["routes"] = [{"prefix": "", "strategy": "least_cost", "suppliers": ["carrier-a"]}]
    return doc


def _via_stunnel(
    stunnels: StunnelFactory, pki: Pki, node: Node, cert: Issued, ip: str, name: str
) -> Stunnel:
    """A client-mode stunnel for a sipp UAC on ``ip``: TLS to the node's TLS port from ``ip``,
    presenting ``cert``."""
    return stunnels.before_uac(
        name,
        local=ip,
        node=(NODE_IP, tls_port(node)),
        cert=cert.cert,
        key=cert.key,
        ca=pki.ca.cert,
    )


def _before_supplier(
    stunnels: StunnelFactory, pki: Pki, uas: Sipp, cert: Issued, name: str
) -> Stunnel:
    """A server-mode stunnel for a sipp UAS in TCP mode, presenting ``cert``: the supplier's
    TLS address."""
    return stunnels.before_uas(
        name,
        uas=(uas.options.local_ip, uas.options.local_port),
        cert=cert.cert,
        key=cert.key,
        ca=pki.ca.cert,
    )


def _only_connection(tunnel: Stunnel) -> str:
    """``HOST:PORT`` of the one TLS connection a client-mode stunnel opened to the node (the
    source the node saw), after checking it opened one only and accepted the node's
    certificate on it."""
    assert tunnel.accepted_certificates() == ["CN=node"], tunnel.report()
    [source] = tunnel.connected_from()
    return source


@pytest.mark.parametrize("supplier_transport", ["tls", "udp"])
def test_a_call_over_tls_from_customer_to_supplier(
    start_billing_node: StartBillingNode,
    sipp: SippFactory,
    stunnels: StunnelFactory,
    pki: Pki,
    tmp_path: Path,
    supplier_transport: str,
) -> None:
    """The caller calls the node's TLS port; the B leg leaves over TLS (verified against
    tls_ca, to a supplier that verifies the node's certificate in turn) or UDP, as the
    supplier's transport says. The callee hangs up: the node's BYE to the caller goes over the
    caller's own TLS connection (the node cannot open one to it)."""
    scenarios = tmp_path / "scenarios"
    if supplier_transport == "tls":
        uas = sipp.uas(tls_scenario("uas_answer_bye", scenarios), transport="tcp")
        supplier = _before_supplier(stunnels, pki, uas, pki.callee, "supplier")
        supplier_address = supplier.address
    else:
        uas = sipp.uas("uas_answer_bye")
        supplier_address = SippFactory.address(uas)
    node = start_billing_node(_example(supplier_address, supplier_transport), **tls_config(pki))
    caller = _via_stunnel(stunnels, pki, node, pki.caller, CALLER_IP, "caller")
    uac = sipp.uac(
        tls_address(node),
        tls_scenario("uac_wait_bye", scenarios),
        transport="tcp",
        extra=("-rsa", caller.address),
    )
    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)
    assert uac.received_requests("BYE"), uac.describe()
    # The node's Contact names its TLS port and transport only for a request that came on a
    # TLS connection: the SIP layer, not just stunnel, saw TLS.
    ok = next(m for m in uac.received if m.status == 200 and m.header("contact"))
    assert f"{NODE_IP}:{tls_port(node)};transport=tls" in (ok.header("contact") or "")
    # INVITE, ACK, BYE and their answers: one TLS connection from the caller's address.
    assert _only_connection(caller).startswith(f"{CALLER_IP}:")
    invite = callee.received_requests("INVITE")[0]
    via = invite.header("via") or ""
    if supplier_transport == "tls":
        assert via.startswith("SIP/2.0/TLS "), via
        assert "transport=tls" in (invite.header("contact") or "")
        # The node presented its own certificate to the supplier, once: ACK and BYE followed
        # the INVITE's connection.
        assert supplier.accepted_certificates() == ["CN=node"], supplier.report()
        assert len(supplier.connected_from()) == 1, supplier.report()
    else:
        assert via.startswith("SIP/2.0/UDP "), via
    [cdr] = node.wait_cdrs(1)
    assert (cdr["customer_peer"], cdr["supplier_peer"], cdr["sip_code"]) == (
        "acme-trunk",
        "carrier-a",
        200,
    )


def test_a_tls_supplier_whose_certificate_does_not_verify_is_not_called(
    start_billing_node: StartBillingNode,
    sipp: SippFactory,
    stunnels: StunnelFactory,
    pki: Pki,
    tmp_path: Path,
) -> None:
    """The node verifies the certificates of the peers it connects to: a supplier presenting
    one of a CA the node does not trust gets no SIP at all, and the caller is refused."""
    uas = sipp.uas("uas_answer", transport="tcp", calls=None)
    supplier = _before_supplier(stunnels, pki, uas, pki.impostor, "impostor")
    node = start_billing_node(_example(supplier.address, "tls"), **tls_config(pki))
    refused = sipp.uac(node.sip_address, expect_final_scenario(503, tmp_path / "scenarios"))
    _ok(refused)
    assert not uas.stop().messages  # nothing reached the supplier's SIP
    assert f"cannot connect to {supplier.address} over TLS" in node.log_text()
    assert "certificate verify failed" in node.log_text()
    [cdr] = node.wait_cdrs(1)
    assert (cdr["customer_peer"], cdr["supplier_peer"], cdr["sip_code"]) == (
        "acme-trunk",
        None,  # no supplier answered
        503,
    )


def test_a_phone_registered_over_tls_receives_its_did_call_on_its_connection(
    start_billing_node: StartBillingNode,
    sipp: SippFactory,
    stunnels: StunnelFactory,
    pki: Pki,
    tmp_path: Path,
) -> None:
    """The phone registers over TLS from an ephemeral port nobody listens on (stunnel's, and
    its Contact names no TLS listener): the DID call can only reach it on the connection its
    REGISTER came on (its flow)."""
    node = start_billing_node(document(), digest_algorithms=["MD5"], **tls_config(pki))
    tunnel = _via_stunnel(stunnels, pki, node, pki.phone, PHONE_IP, "phone")
    scenarios = tmp_path / "scenarios"
    with ThreadPoolExecutor(1) as pool:
        alice = pool.submit(
            sipp.uac,
            tls_address(node),
            tls_scenario("reg_phone", scenarios),
            ip=PHONE_IP,
            transport="tcp",
            service="alice",
            duration_ms=5000,
            name="phone",
            timeout_s=25,
            keys={"expires": "600"},
            extra=(
                "-rsa",
                tunnel.address,
                "-au",
                "alice",
                "-ap",
                "alice-phone-pass-7",
                "-oocsf",
                str(tls_scenario("did_phone_answer", scenarios)),
            ),
        )
        binding = wait_binding(node, "alice")
        provider = sipp.uac(
            node.sip_address, "uac", ip=PROVIDER_IP, service=DID, duration_ms=500, name="provider"
        )
        _ok(provider)
        result = alice.result()
    # The node bound alice to the very TLS connection stunnel opened...
    assert binding["source"] == f"tls:{_only_connection(tunnel)}", (binding, tunnel.report())
    # ...and the INVITE came down it: the node wrote a TLS Via, and sipp (TCP only, behind the
    # stunnel that opened that one connection) received it.
    [invite] = result.received_requests("INVITE")
    assert (invite.header("via") or "").startswith("SIP/2.0/TLS "), invite.text
    assert result.received_requests("BYE"), result.describe()
    [cdr] = node.wait_cdrs(1)
    assert (cdr["callee"], cdr["subscriber"], cdr["sip_code"]) == (DID, "alice", 200)


def test_a_customer_known_by_its_client_certificate(
    start_billing_node: StartBillingNode,
    sipp: SippFactory,
    stunnels: StunnelFactory,
    pki: Pki,
    tmp_path: Path,
) -> None:
    """Mutual TLS: acme-trunk's certificate is its identity. Its certificate calls from an
    address in no ACL (known by the certificate alone); another certificate of the same CA
    from acme-trunk's own address, or that address over UDP, gets 403; a certificate of a CA
    the node does not trust does not get past the handshake."""
    uas = sipp.uas("uas_answer", calls=1)
    doc = _example(SippFactory.address(uas), "udp")
    peer(doc, "acme-trunk")["tls_fingerprint"] = fingerprint_of(pki.caller.cert)
    node = start_billing_node(doc, **tls_config(pki))
    scenarios = tmp_path / "scenarios"

    roaming = _via_stunnel(stunnels, pki, node, pki.caller, UNLISTED_IP, "acme-elsewhere")
    _ok(
        sipp.uac(
            tls_address(node),
            tls_scenario("uac", scenarios),
            ip=UNLISTED_IP,
            transport="tcp",
            name="acme",
            extra=("-rsa", roaming.address),
        )
    )
    _ok(uas.wait(15))
    assert _only_connection(roaming).startswith(f"{UNLISTED_IP}:")
    [cdr] = node.wait_cdrs(1)
    assert (cdr["customer_peer"], cdr["sip_code"]) == ("acme-trunk", 200)

    expect_403 = expect_final_scenario(403, scenarios)
    other_cert = _via_stunnel(stunnels, pki, node, pki.phone, CALLER_IP, "other-cert")
    other = sipp.uac(
        tls_address(node), tls_scenario(expect_403, scenarios), transport="tcp", name="other",
        extra=("-rsa", other_cert.address),
    )  # fmt: skip
    _ok(other)
    [refusal] = other.received_responses(403)
    assert refusal.reason == "Forbidden (certificate required)"
    udp = sipp.uac(node.sip_address, expect_403, name="udp")
    _ok(udp)
    [refusal] = udp.received_responses(403)
    assert refusal.reason == "Forbidden (certificate required)"

    impostor = _via_stunnel(stunnels, pki, node, pki.impostor, CALLER_IP, "impostor")
    refused = sipp.uac(
        tls_address(node), tls_scenario("uac", scenarios), transport="tcp", name="impostor", timeout_s=10,
        extra=("-rsa", impostor.address),
    )  # fmt: skip
    assert refused.successful == 0 and not refused.received, refused.describe()
    # It trusted the node; the node, refusing its certificate, closed the connection without
    # a byte back (TLS 1.3: the client's handshake ends before the server checks its
    # certificate).
    assert impostor.accepted_certificates() == ["CN=node"], impostor.report()
    assert re.search(r"Connection closed: \d+ byte\(s\) sent to TLS, 0 byte\(s\) sent to socket",
                     impostor.log_text()), impostor.report()  # fmt: skip

    port = tls_port(node)
    response, _ = exchange(port, options(port, 1), _client(pki, pki.impostor))
    assert response is None  # refused at the handshake: no SIP answer
    response, _ = exchange(port, options(port, 2), _client(pki, pki.caller))
    assert response is not None and response.status == 200
    assert len(node.wait_cdrs(1)) == 1  # the one call; the refused ones cost nothing


# --------------------------------------------------------------------------- the TLS port


def test_plain_tcp_to_the_tls_port_is_dropped_and_the_node_goes_on(
    start_billing_node: StartBillingNode, pki: Pki
) -> None:
    node = start_billing_node(yaml.safe_load(EXAMPLE.read_text()), **tls_config(pki))
    port = tls_port(node)
    with socket.create_connection((NODE_IP, port), timeout=WAIT) as plain:
        plain.sendall(options(port, 1, "TCP"))
        received = b""
        try:
            while chunk := plain.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"SIP/2.0" not in received  # at most a TLS alert, never a SIP answer
    response, _ = exchange(port, options(port, 2), _client(pki))
    assert response is not None and response.status == 200
    assert node.running


def test_a_new_certificate_is_presented_without_a_restart(
    start_billing_node: StartBillingNode, pki: Pki, tmp_path: Path
) -> None:
    live = Issued(tmp_path / "live.crt", tmp_path / "live.key")
    shutil.copy(pki.node.cert, live.cert)
    shutil.copy(pki.node.key, live.key)
    renewed = pki.ca.issue(tmp_path / "renewed", "node-renewed", NODE_IP)
    node = start_billing_node(
        yaml.safe_load(EXAMPLE.read_text()),
        **tls_config(pki, live, tls_reload_interval=0.2),
    )
    port = tls_port(node)
    pid = node.pid
    _, presented = exchange(port, options(port, 1), _client(pki))
    assert presented == fingerprint_of(pki.node.cert)
    # Written as a renewal tool would: to a temporary name, then renamed over the old file.
    for source, target in ((renewed.key, live.key), (renewed.cert, live.cert)):
        shutil.copy(source, target.with_suffix(".new"))
        os.replace(target.with_suffix(".new"), target)

    def renewed_presented() -> bool:
        response, seen = exchange(port, options(port, 2), _client(pki))
        return seen == fingerprint_of(renewed.cert) and response is not None

    wait_for(renewed_presented, WAIT, "the renewed certificate on a new connection")
    assert node.pid == pid and node.running
    assert "TLS certificate reloaded" in node.log_text()

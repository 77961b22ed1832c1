"""SIP over TLS end to end (issue 14, item 3): a sipp built with TLS (``-t l1``; Debian's has
none, so those tests run only where ``sipp-tls`` or ``$SIPP_TLS`` is installed) and Python's
``ssl`` client (always) against a billing node listening on
``tls_listen``; certificates made at test time by ``openssl`` (tests/tlscerts.py).

Addresses as in the other end-to-end tests: the node 127.0.0.1, the customer 127.0.0.2
(known by its ACL), the supplier 127.0.0.3, the DID provider 127.0.0.7, the phone 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import os
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

from .conftest import CALLEE_IP, CALLER_IP, NODE_IP, SippFactory, StartBillingNode
from .node import Node, wait_for
from .sipp import SCENARIOS, SippResult, expect_final_scenario, free_port, sipp_tls_binary
from .test_billing import EXAMPLE, peer
from .test_registrar import DID, PHONE_IP, PROVIDER_IP, document, wait_binding

pytestmark = pytest.mark.e2e

#: The tests that drive sipp over TLS; the Python ``ssl`` client ones run everywhere.
needs_sipp_tls = pytest.mark.skipif(
    sipp_tls_binary() is None, reason="no sipp with TLS (sipp-tls or $SIPP_TLS)"
)

WAIT = 10.0


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


def sipp_tls(pki: Pki, cert: Issued) -> dict[str, Any]:
    """sipp's TLS options: its certificate, and our CA to verify the node with."""
    return {"tls_cert": cert.cert, "tls_key": cert.key, "tls_ca": pki.ca.cert}


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


@pytest.mark.parametrize("supplier_transport", ["tls", "udp"])
@needs_sipp_tls
def test_a_call_over_tls_from_customer_to_supplier(
    start_billing_node: StartBillingNode, sipp: SippFactory, pki: Pki, supplier_transport: str
) -> None:
    """sipp -t l1 calls the node's TLS port; the B leg leaves over TLS (verified against
    tls_ca) or UDP, as the supplier's transport says. The callee hangs up: the node's BYE to
    the caller goes over the caller's own TLS connection (the node cannot open one to it)."""
    if supplier_transport == "tls":
        uas = sipp.uas("uas_answer_bye", transport="tls", **sipp_tls(pki, pki.callee))
    else:
        uas = sipp.uas("uas_answer_bye")
    node = start_billing_node(
        _example(SippFactory.address(uas), supplier_transport), **tls_config(pki)
    )
    uac = sipp.uac(tls_address(node), "uac_wait_bye", transport="tls", **sipp_tls(pki, pki.caller))
    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)
    assert uac.received_requests("BYE"), uac.describe()
    ok = next(m for m in uac.received if m.status == 200 and m.header("contact"))
    assert f"{NODE_IP}:{tls_port(node)};transport=tls" in (ok.header("contact") or "")
    invite = callee.received_requests("INVITE")[0]
    via = invite.header("via") or ""
    if supplier_transport == "tls":
        assert via.startswith("SIP/2.0/TLS "), via
        assert "transport=tls" in (invite.header("contact") or "")
    else:
        assert via.startswith("SIP/2.0/UDP "), via
    [cdr] = node.wait_cdrs(1)
    assert (cdr["customer_peer"], cdr["supplier_peer"], cdr["sip_code"]) == (
        "acme-trunk",
        "carrier-a",
        200,
    )


@needs_sipp_tls
def test_a_phone_registered_over_tls_receives_its_did_call_on_its_connection(
    start_billing_node: StartBillingNode, sipp: SippFactory, pki: Pki
) -> None:
    """The phone registers over TLS from an ephemeral port nobody listens on: the DID call
    can only reach it on the connection its REGISTER came on (its flow)."""
    node = start_billing_node(document(), digest_algorithms=["MD5"], **tls_config(pki))
    with ThreadPoolExecutor(1) as pool:
        alice = pool.submit(
            sipp.uac,
            tls_address(node),
            "reg_phone",
            ip=PHONE_IP,
            transport="tls",
            service="alice",
            duration_ms=5000,
            name="phone",
            timeout_s=25,
            keys={"expires": "600"},
            extra=(
                "-au",
                "alice",
                "-ap",
                "alice-phone-pass-7",
                "-oocsf",
                str(SCENARIOS / "did_phone_answer.xml"),
            ),
            **sipp_tls(pki, pki.phone),
        )
        binding = wait_binding(node, "alice")
        assert binding["source"].startswith(f"tls:{PHONE_IP}:"), binding
        provider = sipp.uac(
            node.sip_address, "uac", ip=PROVIDER_IP, service=DID, duration_ms=500, name="provider"
        )
        _ok(provider)
        result = alice.result()
    [invite] = result.received_requests("INVITE")
    assert (invite.header("via") or "").startswith("SIP/2.0/TLS "), invite.text
    assert result.received_requests("BYE"), result.describe()
    [cdr] = node.wait_cdrs(1)
    assert (cdr["callee"], cdr["subscriber"], cdr["sip_code"]) == (DID, "alice", 200)


@needs_sipp_tls
def test_a_customer_known_by_its_client_certificate(
    start_billing_node: StartBillingNode, sipp: SippFactory, pki: Pki, tmp_path: Path
) -> None:
    """Mutual TLS: acme-trunk's certificate is its identity. Its own certificate calls; another
    certificate of the same CA from the same address, or its address over UDP, gets 403; a
    certificate of a CA the node does not trust does not get past the handshake."""
    uas = sipp.uas("uas_answer", calls=1)
    doc = _example(SippFactory.address(uas), "udp")
    peer(doc, "acme-trunk")["tls_fingerprint"] = fingerprint_of(pki.caller.cert)
    node = start_billing_node(doc, **tls_config(pki))
    _ok(sipp.uac(tls_address(node), "uac", transport="tls", **sipp_tls(pki, pki.caller)))
    _ok(uas.wait(15))

    expect_403 = expect_final_scenario(403, tmp_path / "scenarios")
    other = sipp.uac(
        tls_address(node), expect_403, transport="tls", name="other", **sipp_tls(pki, pki.phone)
    )
    _ok(other)
    udp = sipp.uac(node.sip_address, expect_403, name="udp")
    _ok(udp)
    [refusal] = udp.received_responses(403)
    assert refusal.reason == "Forbidden (certificate required)"

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

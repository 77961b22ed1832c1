"""The node as the web side sees it (runtime.webport.WebPort over a real B2BUA): calls in
progress as plain values, hanging one up, the counters; a lab node has no database."""

from __future__ import annotations

import asyncio

from smartswitch.b2bua.application import SipApplication
from smartswitch.routing.static import StaticPolicy, StaticRoute
from smartswitch.runtime.config import NodeConfig
from smartswitch.runtime.node import Node
from smartswitch.runtime.webport import WebPort
from smartswitch.sip.transaction import Address
from smartswitch.web.ports import LiveCall, NodePort

CALLER = Address("udp", "127.0.0.2", 5061)
INVITE = (
    b"INVITE sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-1\r\n"
    b"From: <sip:5550001@127.0.0.2:5061>;tag=f1\r\n"
    b"To: <sip:15551234567@127.0.0.1:5060>\r\n"
    b"Call-ID: call-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:caller@127.0.0.2:5061>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_a_lab_node_s_calls_counters_and_hang_up() -> None:
    routes = (StaticRoute("1", ("sip:127.0.0.4:5070",)),)
    config = NodeConfig(node_id="lab1", route=routes, accept_any_source=True)
    node = Node(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        node.sip = SipApplication(StaticPolicy(routes, True), {"udp": ("127.0.0.1", 5060)})
        node.b2bua = node.sip.b2bua
        port: NodePort = WebPort(node)
        node.b2bua.layer.receive(INVITE, CALLER, loop.time() - 30)

        [call] = port.calls()
        assert call == LiveCall(
            key=call.key,
            call_id="call-1",
            state=call.state,
            caller="5550001",
            callee="15551234567",
            supplier="sip:127.0.0.4:5070",
            age_seconds=30.0,
            talk_seconds=None,
        )
        counters = port.counters()
        assert (counters.calls, counters.in_progress, counters.rejected) == (1, 1, 0)
        assert counters.supplier_attempts == {"sip:127.0.0.4:5070": (1, 0)}
        assert counters.delivery is None and counters.bindings is None
        assert port.engine_state().calls >= 1
        assert port.hang_up(call.key) is True
        assert port.hang_up(call.key) is False
        assert port.calls() == [] and port.counters().in_progress == 0
        # No database in lab mode: nothing to reload, no balances, no registrar.
        assert port.sessions is None and port.config_version is None
        assert port.balance(1) is None and port.balances() == {}
        assert port.registrar is None and port.bus is None
        assert port.read_only is False and port.primary_name == ""
        port.config_changed()

    asyncio.run(main())


def test_read_only_comes_from_the_config_or_the_database_role() -> None:
    node = Node(NodeConfig(read_only=True, read_only_primary="node1 (10.0.0.1)"))
    assert node.read_only and node.primary_name == "node1 (10.0.0.1)"
    node = Node(NodeConfig())
    assert not node.read_only and node.primary_name == ""

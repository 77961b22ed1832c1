"""The "bind address" setting applied: the transport's originating address and the outbound
registrations, as the setting and the holder of the shared IP change. A real endpoint on
loopback addresses; the registrar's side is a recorder of what it is told."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, cast

import pytest

from e2e.sipp import free_port
from smartswitch.b2bua.application import SipApplication
from smartswitch.model.config import ConfigSnapshot
from smartswitch.routing.views import ConfigViews
from smartswitch.runtime.config import NodeConfig
from smartswitch.runtime.registrar import RegistrarService
from smartswitch.runtime.signalling import Origination, Signalling, holds_address, origination
from smartswitch.sip.message import Request
from smartswitch.sip.transaction import Address
from smartswitch.transport.endpoint import SipEndpoint

DEDICATED = "127.0.0.12"
SHARED = "192.0.2.10"  # on no interface here: bound with IP_FREEBIND
SUPPLIER = Address("udp", "127.0.0.31", 5060)


class NoCalls:
    def route(self, request: Request, source: Address, now: float) -> Any:
        raise AssertionError("no calls here")


class Registrations:
    """What the signalling tells the registrar: whether to register, in order."""

    def __init__(self) -> None:
        self.told: list[bool] = []

    def set_originating(self, originating: bool, loop_now: float) -> None:
        self.told.append(originating)


@pytest.mark.parametrize(
    ("bind", "dedicated", "holds", "expected"),
    [
        ("", DEDICATED, False, Origination(DEDICATED, shared=False, registers=True)),
        ("", "", False, Origination(None, shared=False, registers=True)),
        (SHARED, DEDICATED, True, Origination(SHARED, shared=True, registers=True)),
        (SHARED, DEDICATED, False, Origination(DEDICATED, shared=False, registers=False)),
    ],
    ids=["dedicated", "no-dedicated-ip", "holds-the-vip", "vip-elsewhere"],
)
def test_the_rule(bind: str, dedicated: str, holds: bool, expected: Origination) -> None:
    assert origination(bind, dedicated, holds) == expected


def test_holds_address() -> None:
    assert holds_address(DEDICATED)  # every 127/8 address is this host's
    assert not holds_address(SHARED)


def test_the_setting_moves_the_origin_and_the_registrations_follow() -> None:
    async def test() -> None:
        endpoint, sip, port = await _endpoint("0.0.0.0")
        config = NodeConfig(sip_listen=f"0.0.0.0:{port}", dedicated_ip=DEDICATED, shared_ip=SHARED)
        registrar = Registrations()
        vip = {"held": False}
        signalling = Signalling(
            config,
            endpoint,
            cast(RegistrarService, registrar),
            asyncio.get_running_loop().time,
            holds_shared=lambda ip: vip["held"],
        )
        # Empty: the dedicated IP, registering.
        await signalling.apply("")
        assert sip.layer.local_address(SUPPLIER) == (DEDICATED, port)
        assert registrar.told == [True]
        # The shared IP, held elsewhere: no registration, B legs from the dedicated IP.
        views = ConfigViews.build(ConfigSnapshot(version=2, bind_address=SHARED))
        signalling.views_changed(views)
        await _settled(signalling)
        assert registrar.told == [True, False]
        assert sip.layer.local_address(SUPPLIER) == (DEDICATED, port)
        # This node takes the VIP: registrations leave the old address, then start from it.
        vip["held"] = True
        signalling.shared_ip_changed()
        await _settled(signalling)
        assert sip.layer.local_address(SUPPLIER) == (SHARED, port)
        assert registrar.told == [True, False, False, True]
        # The same configuration again changes nothing.
        signalling.views_changed(ConfigViews.build(replace(views.snapshot, version=3)))
        await _settled(signalling)
        assert registrar.told == [True, False, False, True]
        # Back to empty.
        signalling.views_changed(ConfigViews.build(ConfigSnapshot(version=4)))
        await _settled(signalling)
        assert sip.layer.local_address(SUPPLIER) == (DEDICATED, port)
        assert registrar.told[-2:] == [False, True]
        await signalling.close()
        endpoint.close()

    asyncio.run(asyncio.wait_for(test(), 10))


def test_an_address_that_cannot_be_bound_leaves_the_listening_one() -> None:
    async def test() -> None:
        endpoint, sip, port = await _endpoint("127.0.0.1")
        config = NodeConfig(sip_listen=f"127.0.0.1:{port}", dedicated_ip=SHARED)  # not here
        signalling = Signalling(config, endpoint, None, asyncio.get_running_loop().time)
        applied = await signalling.apply("")
        assert applied == Origination(None, shared=False, registers=True)
        assert sip.layer.local_address(SUPPLIER) == ("127.0.0.1", port)
        endpoint.close()

    asyncio.run(asyncio.wait_for(test(), 10))


async def _endpoint(listen: str) -> tuple[SipEndpoint, SipApplication, int]:
    """A node's SIP endpoint listening on ``listen`` (a free port)."""
    port = free_port(listen)
    sip = SipApplication(NoCalls(), {"udp": (listen, port)})
    endpoint = SipEndpoint(sip.layer, asyncio.get_running_loop())
    await endpoint.listen(listen, port, "127.0.0.1")
    return endpoint, sip, port


async def _settled(signalling: Signalling) -> None:
    """Until the work the signalling spawned is done."""
    while signalling._tasks:
        await asyncio.gather(*signalling._tasks)

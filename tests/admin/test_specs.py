"""The writer's specs never show a secret: a spec in a log line or a traceback is safe."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from smartswitch.admin.subscribers import DidSpec, RegisterSpec, SubscriberSpec
from smartswitch.admin.writer import (
    AccountSpec,
    ConfigChange,
    PeerSpec,
    Ref,
    RouteSpec,
    SupplierSpec,
    TariffSpec,
)
from smartswitch.model.config import PeerRole, ProfitControl, RouteStrategy

SECRETS = ("peer-s3cret", "register-s3cret", "subscriber-s3cret", "a" * 32, "b" * 64)


def _register() -> RegisterSpec:
    return RegisterSpec(username="trunk", password="register-s3cret", registrar="192.0.2.9")


def _peer() -> PeerSpec:
    return PeerSpec(
        line=3,
        path="peers[0]",
        name="p",
        role=PeerRole.BOTH,
        role_line=3,
        account=Ref("a", 3, "peers[0].account"),
        tariff=None,
        acl=["192.0.2.0/24"],
        acl_line=3,
        username="u",
        username_line=3,
        password="peer-s3cret",
        address="192.0.2.9",
        transport="udp",
        max_calls=None,
        max_cps=None,
        caller_rewrite=[],
        callee_rewrite=[],
        profit_control=ProfitControl.ALLOW_LOSS,
        enabled=True,
        register=_register(),
    )


def _subscriber(**secrets: Any) -> SubscriberSpec:
    values: dict[str, Any] = {"password": None, "ha1_md5": None, "ha1_sha256": None}
    values.update(secrets)
    return SubscriberSpec(
        line=None,
        path="",
        username="alice",
        account=Ref("a", None, "account"),
        tariff=None,
        allowed_cidrs=[],
        max_contacts=5,
        max_calls=None,
        caller_id=None,
        enabled=True,
        **values,
    )


def test_no_spec_shows_a_secret() -> None:
    specs: list[Any] = [
        _register(),
        _peer(),
        _subscriber(password="subscriber-s3cret"),
        _subscriber(ha1_md5="a" * 32, ha1_sha256="b" * 64),
    ]
    change = ConfigChange(
        "p.yaml",
        accounts=[AccountSpec(None, "", "a", "USD", Decimal(0), Decimal(0), True)],
        tariffs=[TariffSpec(None, "", "t", "USD", None, [])],
        peers=[_peer()],
        routes=[
            RouteSpec(
                None, "", "", RouteStrategy.PRIORITY, None, [SupplierSpec(Ref("p", None, ""), 0, 1)]
            )
        ],
        subscribers=specs[2:],
        dids=[DidSpec(None, "", "1", Ref("alice", None, ""), None, True)],
    )
    for shown in [*map(repr, specs), repr(change), str(change)]:
        for secret in SECRETS:
            assert secret not in shown, shown
    # What is not secret still shows.
    assert "trunk" in repr(specs[0]) and "192.0.2.9" in repr(specs[1])

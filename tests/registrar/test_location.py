"""The location service: bindings from any writer, change notifications, expiry."""

from __future__ import annotations

from smartswitch.registrar.location import (
    LOCAL,
    Binding,
    BindingChange,
    ChangeKind,
    LocationService,
    contact_key,
)
from smartswitch.sip.transaction import Address

T0 = 1_700_000_000.0


def _binding(
    contact: str = "sip:alice@10.0.0.1", expires_at: float = T0 + 60, **kw: object
) -> Binding:
    values: dict[str, object] = {
        "aor": "alice",
        "contact": contact,
        "expires_at": expires_at,
        "call_id": "c1",
        "cseq": 1,
        "source": Address("udp", "192.0.2.1", 5060),
        "registered_at": T0,
    }
    values.update(kw)
    return Binding(**values)  # type: ignore[arg-type]


def test_bindings_learned_elsewhere_are_applied_and_reported_with_their_origin() -> None:
    location = LocationService()
    changes: list[BindingChange] = []
    location.listeners.append(changes.append)
    remote = _binding(node="node2")
    location.apply(remote, origin="node2")
    assert location.lookup("alice", T0) == [remote]
    location.remove("alice", remote.key, origin="node2")
    assert location.lookup("alice", T0) == []
    assert [(c.kind, c.origin) for c in changes] == [
        (ChangeKind.SET, "node2"),
        (ChangeKind.REMOVED, "node2"),
    ]


def test_refreshes_keep_one_deadline_and_expiry_follows_the_latest() -> None:
    location = LocationService()
    changes: list[BindingChange] = []
    location.listeners.append(changes.append)
    for n in range(100):  # a phone refreshing every 10 s
        location.apply(_binding(expires_at=T0 + 60 + 10 * n, registered_at=T0 + 10 * n))
    assert len(location._deadlines) == 1
    assert location.expire(T0 + 60) == []  # the old deadline: refreshed since, re-queued
    assert location.count("alice", T0 + 1000) == 1
    [gone] = location.expire(T0 + 60 + 990)
    assert gone.expires_at == T0 + 1050
    assert changes[-1].kind is ChangeKind.EXPIRED and changes[-1].origin == LOCAL


def test_a_shorter_refresh_expires_on_time() -> None:
    location = LocationService()
    location.apply(_binding(expires_at=T0 + 3600))
    location.apply(_binding(expires_at=T0 + 60))
    assert [b.expires_at for b in location.expire(T0 + 60)] == [T0 + 60]


def test_contact_key_follows_uri_comparison() -> None:
    assert contact_key("sip:alice@Example.COM:5060;ob") == contact_key("SIP:alice@example.com:5060")
    assert contact_key("sip:alice@example.com") != contact_key("sip:alice@example.com:5060")
    assert contact_key("sip:Alice@example.com") != contact_key("sip:alice@example.com")
    assert contact_key("sip:a@h;transport=TCP") == contact_key("sip:a@h;transport=tcp")
    assert contact_key("sip:a@h;transport=tcp") != contact_key("sip:a@h")


def test_expires_in_rounds_up() -> None:
    binding = _binding(expires_at=T0 + 59.2)
    assert binding.expires_in(T0) == 60
    assert binding.expires_in(T0 + 100) == 0

"""The configuration indexed for the call path, rebuilt whole from each new snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from smartswitch.billing.rating import TariffIndex
from smartswitch.model.config import ConfigSnapshot, Did, Peer, Subscriber, Tariff
from smartswitch.routing.acl import AclIndex
from smartswitch.routing.selection import RouteTable


@dataclass(frozen=True, slots=True)
class ConfigViews:
    snapshot: ConfigSnapshot
    acl: AclIndex
    tariffs: dict[int, TariffIndex]
    routes: RouteTable
    credential_peers: dict[str, Peer]  # customers that authenticate by digest, by username
    # The registrar's: subscribers by username, DIDs by number, peers that deliver DIDs.
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    dids: dict[str, Did] = field(default_factory=dict)
    did_acl: AclIndex = field(default_factory=lambda: AclIndex(()))
    # Mutual TLS: customers by the fingerprint of their client certificate.
    certificates: dict[str, Peer] = field(default_factory=dict)
    # The hosts of the peers we send to (suppliers' addresses): their OPTIONS pings and the
    # like are not a stranger's (smartswitch.sip.flood).
    peer_hosts: frozenset[str] = frozenset()

    @classmethod
    def build(cls, snapshot: ConfigSnapshot, previous: ConfigViews | None = None) -> ConfigViews:
        """Index a snapshot; raises ValueError on a configuration that cannot be indexed.

        A tariff that is the very object of ``previous``'s snapshot (the loader shares what did
        not change) keeps its index: a carrier's deck is not indexed again for every change
        elsewhere."""
        peers = snapshot.peers.values()
        return cls(
            snapshot=snapshot,
            acl=AclIndex(peers),
            tariffs={t.id: _tariff_index(t, previous) for t in snapshot.tariffs.values()},
            routes=RouteTable(snapshot.routes),
            credential_peers={
                p.username: p for p in peers if p.username and p.password and p.is_customer
            },
            subscribers={s.username: s for s in snapshot.subscribers.values()},
            dids={number: d for number, d in snapshot.dids.items() if d.enabled},
            did_acl=AclIndex(peers, role="did"),
            peer_hosts=frozenset(_host(p.address) for p in peers if p.address and p.enabled),
            certificates={
                p.tls_fingerprint: p for p in peers if p.tls_fingerprint and p.is_customer
            },
        )

    @property
    def version(self) -> int:
        return self.snapshot.version


def _host(address: str) -> str:
    """The host of a peer's ``host[:port]`` / ``[v6]:port`` (already checked by the writer)."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.rpartition(":")[0] if address.count(":") == 1 else address


def _tariff_index(tariff: Tariff, previous: ConfigViews | None) -> TariffIndex:
    if previous is not None and previous.snapshot.tariffs.get(tariff.id) is tariff:
        return previous.tariffs[tariff.id]
    return TariffIndex(tariff)

"""The configuration indexed for the call path, rebuilt whole from each new snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from smartswitch.billing.rating import TariffIndex
from smartswitch.model.config import ConfigSnapshot, Did, Peer, Subscriber
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

    @classmethod
    def build(cls, snapshot: ConfigSnapshot) -> ConfigViews:
        """Index a snapshot; raises ValueError on a configuration that cannot be indexed."""
        peers = snapshot.peers.values()
        return cls(
            snapshot=snapshot,
            acl=AclIndex(peers),
            tariffs={t.id: TariffIndex(t) for t in snapshot.tariffs.values()},
            routes=RouteTable(snapshot.routes),
            credential_peers={
                p.username: p for p in peers if p.username and p.password and p.is_customer
            },
            subscribers={s.username: s for s in snapshot.subscribers.values()},
            dids={number: d for number, d in snapshot.dids.items() if d.enabled},
            did_acl=AclIndex(peers, role="did"),
        )

    @property
    def version(self) -> int:
        return self.snapshot.version

"""``smartswitch db upgrade`` in a cluster: which migrations would run, and whether a node
still running an older release would break.

Expand migrations are always safe (store/migrate.py): the previous release keeps working on
the schema they make. A contract migration (it drops, renames or narrows) is safe only once
every node of the cluster runs code that carries it, and that code stopped using what it
removes. Each node registers the newest migration its code knows (``nodes.schema_head``,
cluster/nodes.py); a node that registered none runs a release from before nodes reported it.
A node taken out of the cluster for good is left out with ``--ignore-node``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.cluster.nodes import node_versions
from smartswitch.store.database import session_factory
from smartswitch.store.migrate import Migration, knows, pending, revision_of

__all__ = ["Blocker", "UpgradePlan", "plan_upgrade"]


@dataclass(frozen=True, slots=True)
class Blocker:
    """A node that would break: its name, what it runs, the contract steps it lacks."""

    node: str
    version: str
    schema_head: str
    missing: tuple[str, ...]

    def describe(self) -> str:
        runs = (
            f"version {self.version}, schema {self.schema_head}"
            if self.schema_head
            else "a release that does not report its schema (before 0008)"
        )
        return f"{self.node} ({runs}) does not know {', '.join(self.missing)}"


@dataclass(frozen=True, slots=True)
class UpgradePlan:
    current: str | None
    steps: list[Migration]
    blockers: list[Blocker] = field(default_factory=list)

    @property
    def contract(self) -> list[Migration]:
        return [m for m in self.steps if m.contract]

    @property
    def safe(self) -> bool:
        return not self.blockers

    def refusal(self) -> str:
        steps = ", ".join(f"{m.revision} ({m.title})" for m in self.contract)
        lines = [
            f"refusing to upgrade: contract migration(s) {steps} would break "
            f"{len(self.blockers)} node(s) still in the cluster:"
        ]
        lines += [f"  {b.describe()}" for b in self.blockers]
        lines.append(
            "upgrade those nodes to this release first (smartswitch drain, install, start), "
            "or, for a node gone for good, pass --ignore-node NAME"
        )
        return "\n".join(lines)


async def plan_upgrade(
    engine: AsyncEngine, steps: list[Migration], ignore: Collection[str] = ()
) -> UpgradePlan:
    """What upgrading the database behind ``engine`` to the newest of ``steps`` would run,
    and the registered nodes a contract step among them would break."""
    current = await revision_of(engine)
    todo = pending(current, steps)
    contract = [m for m in todo if m.contract]
    if current is None or not contract:
        return UpgradePlan(current, todo)
    async with session_factory(engine)() as session:
        nodes = await node_versions(session)
    blockers = []
    for name, (version, head) in sorted(nodes.items()):
        if name in ignore:
            continue
        missing = tuple(m.revision for m in contract if not knows(head, m.revision, steps))
        if missing:
            blockers.append(Blocker(name, version, head, missing))
    return UpgradePlan(current, todo, blockers)

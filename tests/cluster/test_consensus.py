"""The leader lease, the campaign and anti-flap against a real three-member etcd cluster
(127.0.0.41-.43, one cluster for the module, data directories on scratch space, removed).

One test also needs a MariaDB (the holder that loses its lease makes it read-only).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartswitch.cluster.consensus import (
    LEADER_KEY,
    POSITIONS_PREFIX,
    CampaignResult,
    ConsensusError,
    EtcdClient,
    FailoverSettings,
    FlapGuard,
    LeaderLease,
    NotConfirmed,
    PositionPublisher,
    WatchEvent,
    campaign,
    campaign_automatic,
)
from smartswitch.cluster.etcd import EtcdMember
from smartswitch.cluster.promotion import DatabaseServer, make_read_only

from .conftest import MariaDBFactory
from .mariadb import free_port

# Real daemons, like the other cluster end-to-end tests: the fast suite (-m "not e2e ...")
# leaves these out.
pytestmark = [pytest.mark.etcd, pytest.mark.e2e]

IPS = {"e1": "127.0.0.41", "e2": "127.0.0.42", "e3": "127.0.0.43"}


class Etcd:
    def __init__(self, members: list[EtcdMember]) -> None:
        self.members = members

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def client(self, **kwargs: Any) -> EtcdClient:
        return EtcdClient(self.endpoints, **kwargs)

    def leader(self) -> EtcdMember:
        done = subprocess.run(
            [
                "etcdctl",
                "--endpoints",
                ",".join(self.endpoints),
                "endpoint",
                "status",
                "-w",
                "json",
            ],
            capture_output=True,
            text=True,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
            timeout=10,
            check=False,
        )
        for row in json.loads(done.stdout or "[]"):
            status = row["Status"]
            if status["header"]["member_id"] == status["leader"]:
                return next(m for m in self.members if m.client_url == row["Endpoint"])
        raise AssertionError(f"no leader: {done.stdout} {done.stderr}")

    def ensure_all_running(self) -> None:
        for member in self.members:
            if not member.running:
                member.start()
        for member in self.members:
            member.wait_healthy(30)


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        pytest.skip("etcd not installed (Debian etcd-server, etcd-client)")
    base = Path(tempfile.mkdtemp(prefix="smartswitch-etcd-"))
    client_ports = {name: free_port(ip) for name, ip in IPS.items()}
    peer_port = free_port("127.0.0.41", exclude=list(client_ports.values()))
    members = [
        EtcdMember(
            name,
            ip,
            base / name,
            IPS,
            client_port=client_ports[name],
            peer_port=peer_port,
            cluster_token=f"test-{base.name}",
        )
        for name, ip in IPS.items()
    ]
    # Every member's client port differs; the peer ports must be the same for all (the
    # initial cluster names one port), so they are checked free on every address.
    for ip in IPS.values():
        free_port(ip, exclude=[peer_port])
    cluster = Etcd(members)
    try:
        for member in members:
            member.start()
        for member in members:
            member.wait_healthy(30)
        yield cluster
    finally:
        for member in members:
            member.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster(etcd: Etcd) -> Iterator[Etcd]:
    """The module's etcd, every member up, no smartswitch keys left by an earlier test."""
    etcd.ensure_all_running()

    async def clean() -> None:
        async with etcd.client() as client:
            await client.delete("/smartswitch/", prefix=True)

    asyncio.run(clean())
    yield etcd


def run(fn: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(fn(), timeout)

    return asyncio.run(main())


async def until(condition: Callable[[], object], what: str, timeout: float = 15.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_the_holder_renews_and_the_key_revision_is_the_epoch(cluster: Etcd) -> None:
    async def main() -> None:
        async with cluster.client() as client, cluster.client() as observer:
            events: list[WatchEvent] = []

            async def watch() -> None:
                async for event in observer.watch(LEADER_KEY):
                    events.append(event)

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0.2)  # the watch is open
            holder = LeaderLease(client, "node1", ttl=3)
            won = await holder.acquire()
            assert won.won and won.holder == "node1"
            kv = await client.get(LEADER_KEY)
            assert kv is not None and kv.text == "node1" and kv.lease == holder.lease
            assert won.epoch == holder.epoch == kv.create_revision
            # Held past its TTL: renewed every second.
            await until(lambda: holder.renewals >= 4, "four renewals", 10)
            assert holder.held and not holder.lost.is_set()
            assert (await client.get(LEADER_KEY)) == kv
            # Another node cannot take it, and learns who holds it.
            rival = LeaderLease(client, "node2", ttl=3)
            lost = await rival.acquire()
            assert not lost.won and lost.holder == "node1" and lost.epoch == kv.create_revision
            # A switchover: the holder lets go, the next one gets a later epoch.
            await holder.release()
            await until(lambda: any(e.kind == "delete" for e in events), "delete seen")
            taken = await rival.acquire()
            assert taken.won and taken.epoch > won.epoch
            await until(lambda: len(events) >= 3, "three events")
            assert [e.kind for e in events[:3]] == ["put", "delete", "put"]
            assert events[2].kv.text == "node2" and events[2].kv.create_revision == taken.epoch
            await rival.release()
            watcher.cancel()

    run(main)


def test_the_write_fence_confirms_only_the_live_holder_of_the_epoch(cluster: Etcd) -> None:
    async def main() -> None:
        async with cluster.client() as client, cluster.client() as other:
            holder = LeaderLease(client, "node1", ttl=4)
            with pytest.raises(NotConfirmed, match="does not hold the leader key"):
                await holder.confirm()
            assert (await holder.acquire()).won
            left = await holder.confirm()
            assert 2 <= left <= 4
            # Someone else's key of a later epoch (the lease revoked behind the holder's back,
            # as etcd does when it lapses): refused at the next change, not at the next renewal.
            await other.revoke(holder.lease)
            rival = LeaderLease(other, "node2", ttl=4)
            assert (await rival.acquire()).won
            with pytest.raises(NotConfirmed):
                await holder.confirm()
            assert await rival.confirm() >= 2
            await rival.release()
            with pytest.raises(NotConfirmed, match="does not hold the leader key"):
                await rival.confirm()
            await holder.release()

    run(main)


def test_a_holder_cut_off_from_the_majority_is_refused_before_it_fences(cluster: Etcd) -> None:
    """The holder's only etcd member loses its peers: its own copy still shows the key (a
    serializable read), the holder has missed no renewal yet, and still the write fence
    refuses at once: a linearizable read needs the majority."""
    alone = cluster.members[0]

    async def main() -> None:
        async with EtcdClient([alone.client_url], timeout=1.0) as client:
            holder = LeaderLease(client, "node1", ttl=10)
            assert (await holder.acquire()).won
            assert await holder.confirm() >= 5
            for member in cluster.members[1:]:
                await asyncio.to_thread(member.stop)
            started = time.monotonic()
            with pytest.raises(NotConfirmed, match="no member answered"):
                await holder.confirm(timeout=1.0)
            took = time.monotonic() - started
            assert took < 1.5, took
            stale = await client.get(LEADER_KEY, serializable=True, timeout=1.0)
            assert stale is not None and stale.lease == holder.lease
            assert holder.held, "fenced already: this test shows nothing"
            await holder.release()

    run(main)


def test_sigkill_of_the_etcd_leader_member_writes_resume_within_seconds(
    cluster: Etcd, cluster_timings: dict[str, float]
) -> None:
    async def main() -> None:
        async with cluster.client(timeout=1.0) as client:
            holder = LeaderLease(client, "node1", ttl=10)
            assert (await holder.acquire()).won
            leader = cluster.leader()
            leader.kill()
            killed = time.monotonic()
            while True:
                try:
                    await client.put("/smartswitch/probe", "after the kill")
                    break
                except ConsensusError:
                    assert time.monotonic() - killed < 10, "writes did not resume in 10 s"
                    await asyncio.sleep(0.05)
            resumed = time.monotonic() - killed
            cluster_timings["etcd: writes accepted again after SIGKILL of the leader"] = resumed
            assert resumed < 5.0
            # The lease holder rode it out: renewals went to the surviving members.
            renewals = holder.renewals
            await until(lambda: holder.renewals > renewals + 1, "renewals go on", 10)
            assert holder.held
            await holder.release()
        leader.start()  # rejoins with its data directory
        leader.wait_healthy(30)

    run(main)


def test_a_silent_member_first_in_line_does_not_eat_the_deadline(cluster: Etcd) -> None:
    """A member whose packets are dropped (a partition: no refusal, no answer) first among
    the endpoints: the request still reaches a live member within its deadline, and the next
    one goes there first. Here the silent member is a real socket that accepts connections and
    never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.44", 0))
        silent.listen(8)
        dead = f"http://127.0.0.44:{silent.getsockname()[1]}"

        async def main() -> None:
            async with EtcdClient([dead, *cluster.endpoints], timeout=1.0) as client:
                # Before each member had its share, the silent one took the whole second and
                # this failed ("no time left").
                await client.put("/smartswitch/probe", "past a silent member")
                assert client.endpoints[client._preferred] != dead
                assert (await client.get("/smartswitch/probe")) is not None

        run(main)


class Cuttable(httpx.AsyncBaseTransport):
    """The holder's access to etcd, which the test can cut: requests then hang (a dead
    network, the worst case for a renewal), bounded only by the client's deadlines."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.cut = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut:
            await asyncio.sleep(3600)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.mariadb
def test_a_holder_cut_off_goes_read_only_before_its_lease_can_expire(
    cluster: Etcd, mariadb_factory: MariaDBFactory, cluster_timings: dict[str, float]
) -> None:
    db = mariadb_factory("fenced", host="127.0.0.44")
    database = DatabaseServer("node1", db.url)
    ttl = 4

    async def main() -> None:
        access = Cuttable()
        async with (
            EtcdClient(cluster.endpoints, transport=access) as mine,
            cluster.client() as other,
        ):
            read_only_at: list[float] = []

            async def on_lost(reason: str) -> None:
                await asyncio.to_thread(make_read_only, database, drain_timeout=1.0)
                read_only_at.append(time.monotonic())

            holder = LeaderLease(mine, "node1", ttl=ttl, on_lost=on_lost)
            assert (await holder.acquire()).won
            await until(lambda: holder.renewals >= 1, "a renewal")
            last_ok = holder.last_renewed
            assert last_ok is not None
            access.cut = True
            cut = time.monotonic()
            # The others see the key vanish when the lease expires; then one takes it.
            rival = LeaderLease(other, "node2", ttl=ttl)
            while True:
                result = await rival.acquire()
                if result.won:
                    break
                await asyncio.sleep(0.05)
            taken = time.monotonic()
            assert read_only_at, "the holder was not fenced before the key was taken"
            fenced = read_only_at[0]
            assert holder.lost.is_set() and "no renewal" in holder.lost_reason
            assert fenced < taken
            assert bool(db.query("SELECT @@global.read_only")[0][0])
            cluster_timings["etcd: cut off -> database read-only"] = fenced - cut
            cluster_timings["etcd: cut off -> key taken by another node"] = taken - cut
            # Fenced within ttl/2 of the last renewal, the key free only after the TTL.
            assert fenced - last_ok <= ttl / 2 + 1.5
            assert taken - last_ok >= ttl - 0.5
            await rival.release()

    run(main)


def test_campaign_only_the_newest_candidate_wins(cluster: Etcd) -> None:
    async def main() -> None:
        async with cluster.client() as client:
            publishers = {n: PositionPublisher(client, n, ttl=5) for n in ("n2", "n3")}
            await publishers["n2"].publish("0-1-100")
            await publishers["n3"].publish("0-1-105")

            async def candidate(node: str, position: str) -> CampaignResult:
                lease = await client.grant(5)
                return await campaign(client, node, lease, position=position)

            behind, newest = await asyncio.gather(
                candidate("n2", "0-1-100"), candidate("n3", "0-1-105")
            )
            assert newest.won and not behind.won
            assert "n3 is ahead" in behind.reason and "0-1-105" in behind.reason
            await client.delete(LEADER_KEY)

            # Equal positions: the create_revision == 0 transaction lets exactly one win.
            await publishers["n2"].publish("0-1-105")
            results = await asyncio.gather(candidate("n2", "0-1-105"), candidate("n3", "0-1-105"))
            assert sorted(r.won for r in results) == [False, True]
            loser = next(r for r in results if not r.won)
            winner = next(r for r in results if r.won)
            assert loser.holder == winner.holder and loser.epoch == winner.epoch
            await client.delete(LEADER_KEY)

            # After a failure seen at ``failed``, a candidate waits for every peer's
            # position published since (n2's is older): then it may campaign.
            failed = time.time()
            lease = await client.grant(5)
            waiting = await campaign(client, "n3", lease, position="0-1-105", settled_after=failed)
            assert not waiting.won and "waiting for n2" in waiting.reason, waiting
            await publishers["n2"].publish("0-1-105")
            settled = await campaign(client, "n3", lease, position="0-1-105", settled_after=failed)
            assert settled.won
            await client.delete(LEADER_KEY)
            for publisher in publishers.values():
                await publisher.stop()
            positions, _ = await client.get_prefix(POSITIONS_PREFIX)
            assert positions == []  # a stopped publisher's position goes with its lease

    run(main)


class Racing(EtcdClient):
    """A client whose first read of the positions is followed, before its transaction, by
    a peer publishing a newer position: the race the prefix comparison closes."""

    def __init__(self, endpoints: list[str], late: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(endpoints)
        self.late: Callable[[], Awaitable[Any]] | None = late

    async def get_prefix(self, prefix: str) -> tuple[list[Any], int]:
        seen = await super().get_prefix(prefix)
        if self.late is not None:
            late, self.late = self.late, None
            await late()
        return seen


def test_a_position_published_during_the_campaign_is_not_missed(cluster: Etcd) -> None:
    async def main() -> None:
        async with cluster.client() as client:
            peer = PositionPublisher(client, "n3", ttl=5)
            await peer.publish("0-1-100")

            async def late() -> None:
                await peer.publish("0-1-107")

            async with Racing(cluster.endpoints, late) as racing:
                lease = await racing.grant(5)
                result = await campaign(racing, "n2", lease, position="0-1-104")
            assert not result.won and "n3 is ahead" in result.reason, result
            assert await client.get(LEADER_KEY) is None
            await peer.stop()

    run(main)


def test_anti_flap_blocks_a_second_automatic_promotion_but_not_a_manual_one(
    cluster: Etcd,
) -> None:
    settings = FailoverSettings(tuple(IPS), automatic=True)

    async def main() -> None:
        async with cluster.client() as client:
            guard = FlapGuard(client, period=3600)
            first = LeaderLease(client, "n2", ttl=3)
            assert (await campaign_automatic(first, guard, settings, "0-1-5")).won
            mark, _ = await guard.last()
            assert mark is not None and mark.automatic and mark.node == "n2"
            await first.release()  # n2 fails in turn, minutes later

            second = LeaderLease(client, "n3", ttl=3)
            refused = await campaign_automatic(second, guard, settings, "0-1-5")
            assert not refused.won and refused.reason.startswith("anti-flap"), refused
            assert await client.get(LEADER_KEY) is None

            # An operator promotes by hand: not blocked, and it lifts the block.
            manual = LeaderLease(client, "n3", ttl=3)
            assert (await manual.acquire()).won
            await guard.record_manual("n3")
            assert await guard.refusal() is None
            await manual.release()
            again = LeaderLease(client, "n1", ttl=3)
            assert (await campaign_automatic(again, guard, settings, "0-1-5")).won
            await again.release()

    run(main)

"""The primary's node cut off from the others, in network namespaces: three hosts of a
:class:`~netlab.NetLab` (n1, n2, n3), each running its own ``mariadbd`` (on the host's
address, port 3307), its own etcd member (started and supervised by the node) and its own
``smartswitch run`` with ``failover = "automatic"`` and a 10 s leader lease. n1's database is
the primary; n2's and n3's are GTID replicas made by ``cluster add-replica``.

The tests run in order on the module's cluster:

1. n1 isolated (every packet to and from the others dropped by nftables in the hosts; its
   interface stays up, so nothing tells it but silence): n1's node cannot renew its lease and
   makes its own database read-only, before the lease can lapse and anyone else can be
   promoted (no instant, sampled every 50 ms, has two writable databases); the majority's etcd
   lets the lease lapse, a replica's node wins the key and promotes its database (a newer
   epoch, an automatic promotion replacing n1); a configuration change tried on n1 at once
   after the cut, while its database is still writable, is refused by the write fence (its
   node cannot confirm the primary lease with etcd: a cut-off member answers no linearizable
   read); one tried after its fencing is refused too ("not writable"); one on the new primary
   is accepted.
2. The link healed: exactly one writable database of the three; n1's node reports that a
   newer epoch names another primary; neither change refused on n1 is on any server;
   ``cluster rejoin`` makes n1 a replica of the new primary and it converges (the
   configuration accepted there reaches it).

Configuration changes are fenced from the first moment of the cut; other writes that reach
n1's database in the seconds before it fences itself (CDRs and balances delivered by nodes
still on its side) become errant transactions of n1, reported after the heal and discarded
by ``cluster rejoin`` (``tests/cluster/test_failover.py`` makes one on purpose).

The servers are reached by the test through their sockets (files: any namespace can open
them); the nodes' own commands (``provision``, ``cluster status``, ``cluster rejoin``) run in
their hosts. Timings are printed at the end (``HA timings``)::

    flock /tmp/ss-heavy.lock pytest -m netns tests/ha/test_partition_promotion.py -s
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cluster.harness import provisioning
from cluster.mariadb import MariaDBInstance, skip_without_mariadb
from e2e.node import dump_toml, node_command
from netlab import SUBNET, NetLab, wait_for

from .harness import child_env
from .switchnodes import SwitchNode

pytestmark = [pytest.mark.netns, pytest.mark.mariadb, pytest.mark.etcd, pytest.mark.e2e]

NODES = ("n1", "n2", "n3")
DB_PORT = 3307
SECRET = "partition-cluster-secret-0123456789"
TTL = 10
#: The selling price of prefix 44 each change sets: who accepted which change is read back.
REFUSED_PRICE = Decimal("0.0999")
EARLY_PRICE = Decimal("0.0998")  # tried on n1 at once after the cut, before its fencing
ACCEPTED_PRICE = Decimal("0.0201")


@dataclass(kw_only=True)
class LabMember(SwitchNode):
    """One host of the cluster: a switch node (started, stopped and logged as the shared-IP
    tests' nodes are) with its own ``mariadbd`` in the same host, replication and etcd."""

    db: MariaDBInstance
    primary_url: str

    def config(self) -> dict[str, Any]:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return {
            "data_dir": self.data_dir,
            "log_level": "info",
            "node_id": self.name,
            "node_name": self.name,
            "sip_listen": f"{self.address}:5060",
            "http_listen": f"{self.address}:8080",
            "dedicated_ip": self.address,
            "database_url": self.db.url,
            "db_scheme": "replication",
            "primary_database_url": self.primary_url,
            "cluster_secret": SECRET,
            "etcd_members": [f"{n}={self.lab.host(n).address}" for n in NODES],
            "failover": "automatic",
            "failover_ttl": TTL,
        }

    def write_config(self) -> None:
        """The config file, before the node runs: the cluster commands read it."""
        self.config_path.write_text(dump_toml(self.config()))

    def argv(self, *args: str) -> list[str]:
        """``smartswitch ARGS --config`` in the member's host."""
        return self.lab.exec_argv(
            self.name, [*node_command(), *args, "--config", str(self.config_path)]
        )

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``smartswitch ARGS --config`` run in the member's host."""
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=child_env(),
        )

    def status(self) -> dict[str, Any]:
        """The node's own account of itself (its row of ``cluster status --format json``)."""
        done = self.cli("cluster", "status", "--format", "json", timeout=30)
        rows = json.loads(done.stdout or "[]")
        return next((r for r in rows if r.get("node") == self.name), {"reachable": False})

    def failover(self) -> str:
        return str((self.status().get("db") or {}).get("failover", ""))

    def read_only(self) -> bool:
        return bool(self.db.query("SELECT @@global.read_only")[0][0])

    def price_44(self) -> Decimal | None:
        rows = self.db.query(
            "SELECT r.price_per_minute FROM rates r JOIN tariffs t ON r.tariff_id = t.id "
            "WHERE t.name = 'retail' AND r.prefix = '44'",
            database="smartswitch",
        )
        return Decimal(rows[0][0]) if rows else None


@dataclass
class PartitionCluster:
    lab: NetLab
    members: dict[str, LabMember]
    workdir: Path
    changes: int = 0
    new_primary: str = ""

    def writable(self) -> list[str]:
        """The hosts whose ``mariadbd`` has ``read_only=0`` (a server that does not answer is
        not counted)."""
        out = []
        for name, member in self.members.items():
            with contextlib.suppress(Exception):
                if not member.read_only():
                    out.append(name)
        return out

    def document(self, price: Decimal) -> Path:
        """The same provisioning document each time, prefix 44 sold at ``price``."""
        self.changes += 1
        document = self.workdir / f"change-{self.changes}.yaml"
        rate = {"prefix": "44", "price_per_minute": str(price), "increment": "1/1"}
        document.write_text(provisioning(5060, [rate]))
        return document

    def change(self, on: str, price: Decimal) -> subprocess.CompletedProcess[str]:
        """``provision`` in ``on``'s host."""
        return self.members[on].cli("provision", str(self.document(price)))

    def tails(self) -> str:
        return "".join(m.log_tail() for m in self.members.values())


def _sees_leader(member: LabMember, leader: str) -> bool:
    return f"leader: {leader}" in member.failover()


@pytest.fixture(scope="module")
def cluster(lab: NetLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartitionCluster]:
    skip_without_mariadb()
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (Debian etcd-server)")
    workdir = tmp_path_factory.mktemp("partition")
    started = time.monotonic()
    dbs = {
        name: MariaDBInstance(
            workdir,
            f"db-{name}",
            lab.host(name).address,
            DB_PORT,
            server_id=i + 1,
            netns=lab.host(name).netns,
            client_hosts=("127.%", f"{SUBNET}.%"),
        )
        for i, name in enumerate(NODES)
    }
    primary_url = dbs["n1"].url
    members = {
        name: LabMember(lab, name, workdir / name, (), db=db, primary_url=primary_url)
        for name, db in dbs.items()
    }
    made = PartitionCluster(lab, members, workdir)
    try:
        for db in dbs.values():
            db.initialize()
            db.start()
        for member in members.values():
            member.write_config()
        dbs["n1"].create_database()
        for done in (
            members["n1"].cli("cluster", "init-primary"),
            members["n2"].cli("cluster", "add-replica"),
            members["n3"].cli("cluster", "add-replica"),
        ):
            assert done.returncode == 0, done.stdout + done.stderr
        for member in members.values():
            member.start()
        wait_for(
            lambda: "holds the leader lease" in members["n1"].failover(),
            90,
            interval=1.0,
            what="n1 (the primary's node) holding the leader lease",
        )
        for name in ("n2", "n3"):
            wait_for(
                partial(_sees_leader, members[name], "n1"),
                60,
                interval=1.0,
                what=f"{name} seeing n1 as the leader",
            )
        # With etcd, configuration is taken only through the node holding the primary lease.
        first = made.change("n1", Decimal("0.0200"))
        assert first.returncode == 0, first.stdout + first.stderr
        print(f"\npartition lab up in {time.monotonic() - started:.1f} s")
        yield made
    except BaseException:
        print(made.tails())
        raise
    finally:
        for member in members.values():
            with contextlib.suppress(Exception):
                member.stop()
        for db in dbs.values():
            with contextlib.suppress(Exception):
                db.stop()


def test_cut_off_primary_fences_itself_and_the_majority_promotes(
    cluster: PartitionCluster, ha_timings: dict[str, list[float]]
) -> None:
    lab, n1 = cluster.lab, cluster.members["n1"]
    assert cluster.writable() == ["n1"]
    early_document = cluster.document(EARLY_PRICE)
    lab.isolate("n1")
    cut = time.monotonic()
    # At once, while n1's database is still writable and its node has not missed a renewal
    # yet: only the write fence (a linearizable etcd read now) can refuse it.
    early = subprocess.Popen(
        n1.argv("provision", str(early_document)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    early_done: float | None = None
    fenced_at: float | None = None
    promoted_at: float | None = None
    samples = 0
    # Sampled every 50 ms from the cut until both happened: never two writable databases.
    while fenced_at is None or promoted_at is None or early_done is None:
        elapsed = time.monotonic() - cut
        if early_done is None and early.poll() is not None:
            early_done = elapsed
        assert elapsed < 60, f"fenced after {fenced_at}, promoted after {promoted_at}"
        writable = cluster.writable()
        samples += 1
        assert len(writable) <= 1, f"two writable databases {elapsed:.2f} s after the cut"
        if fenced_at is None and "n1" not in writable:
            fenced_at = elapsed
        if promoted_at is None and writable and writable != ["n1"]:
            promoted_at = elapsed
            cluster.new_primary = writable[0]
        time.sleep(0.05)
    early_out, early_err = early.communicate(timeout=10)
    ha_timings["partition: cut to n1 read-only (its own fencing)"] = [fenced_at]
    ha_timings["partition: cut to the early change on n1 refused"] = [early_done]
    print(f"\nchange on n1 at the cut refused after {early_done:.2f} s: {early_err.strip()}")
    # Refused by the fence, not by a read-only database: provision checks the database first,
    # so this message means n1's database was still writable when the change was tried.
    assert early.returncode == 1, early_out + early_err
    assert "cannot confirm it holds the primary lease" in early_err, early_err
    assert "not writable" not in early_err, early_err
    ha_timings["partition: cut to a new primary writable"] = [promoted_at]
    print(
        f"\ncut -> n1 read-only {fenced_at:.2f} s, -> {cluster.new_primary} writable "
        f"{promoted_at:.2f} s ({samples} samples)"
    )
    # Fenced by its own node before its lease could lapse in the majority (TTL after its
    # last renewal, which was at most TTL/3 before the cut).
    assert fenced_at < promoted_at
    assert fenced_at < TTL - TTL / 3, fenced_at
    new = cluster.members[cluster.new_primary]
    (row,) = new.db.query(
        "SELECT epoch, node, previous_node, automatic FROM promotions ORDER BY epoch DESC LIMIT 1",
        database="smartswitch",
    )
    assert row[1:] == (cluster.new_primary, "n1", 1), row
    assert int(row[0]) > 1
    (state,) = new.db.query("SELECT epoch, primary_node FROM cluster_state", database="smartswitch")
    assert state == (row[0], cluster.new_primary), state
    # The winner keeps the key it won: its create revision is the epoch.
    wait_for(
        lambda: f"holds the leader lease (epoch {row[0]})" in new.failover(),
        15,
        interval=0.5,
        what=f"{cluster.new_primary} holding the leader key of epoch {row[0]}",
    )
    (old_state,) = n1.db.query(
        "SELECT epoch, primary_node FROM cluster_state", database="smartswitch"
    )
    assert int(old_state[0]) < int(row[0]), old_state

    # The cut-off side: its node says why it stood down, and refuses configuration.
    assert "leader lease lost" in n1.failover()
    refused = cluster.change(on="n1", price=REFUSED_PRICE)
    assert refused.returncode != 0, refused.stdout
    assert "not writable" in refused.stderr, refused.stderr
    # The majority's side takes it.
    started = time.monotonic()
    accepted = cluster.change(on=cluster.new_primary, price=ACCEPTED_PRICE)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    ha_timings["partition: cut to configuration accepted on the new primary"] = [
        time.monotonic() - cut
    ]
    print(f"provision on the new primary took {time.monotonic() - started:.2f} s")
    assert new.price_44() == ACCEPTED_PRICE
    assert n1.price_44() not in (REFUSED_PRICE, EARLY_PRICE)


def test_after_the_heal_one_primary_and_the_cut_off_change_nowhere(
    cluster: PartitionCluster, ha_timings: dict[str, list[float]]
) -> None:
    assert cluster.new_primary, "the first test did not promote anyone"
    lab, n1 = cluster.lab, cluster.members["n1"]
    new = cluster.members[cluster.new_primary]
    lab.rejoin("n1")
    healed = time.monotonic()

    # Sampled from the heal on: always exactly one writable database, the new primary (its
    # node keeps renewing while the cut-off etcd member comes back), until n1's node has
    # reported the newer epoch and the primary's fencing window (TTL/2) has passed.
    reported: dict[str, Any] | None = None
    while reported is None or time.monotonic() - healed < TTL / 2 + 1:
        elapsed = time.monotonic() - healed
        assert elapsed < 40, f"n1 reported nothing within 40 s of the heal{cluster.tails()}"
        read_only = {name: m.read_only() for name, m in cluster.members.items()}
        writable = [n for n, ro in read_only.items() if not ro]
        assert writable == [cluster.new_primary], f"{elapsed:.1f} s after the heal: {read_only}"
        if reported is None:
            db = n1.status().get("db") or {}
            if "a newer epoch" in str(db.get("last_error", "")):
                reported = db
                ha_timings["partition: heal to n1 reporting the newer epoch"] = [
                    time.monotonic() - healed
                ]
        time.sleep(0.2)
    assert reported["role"] == "fenced", reported
    assert f"names {cluster.new_primary} the primary" in str(reported["last_error"]), reported
    print(f"\nn1 after the heal: {reported['last_error']}")
    # The changes refused on the cut-off side are on no server.
    prices = {name: m.price_44() for name, m in cluster.members.items()}
    assert REFUSED_PRICE not in prices.values(), prices
    assert EARLY_PRICE not in prices.values(), prices
    assert prices[cluster.new_primary] == ACCEPTED_PRICE, prices

    started = time.monotonic()
    rejoined = n1.cli("cluster", "rejoin")
    assert rejoined.returncode == 0, rejoined.stdout + rejoined.stderr
    assert f"a replica of {cluster.new_primary}" in rejoined.stdout, rejoined.stdout
    print(rejoined.stdout.strip())
    wait_for(lambda: n1.price_44() == ACCEPTED_PRICE, 20, what="n1 converging")
    ha_timings["partition: cluster rejoin to n1 converged"] = [time.monotonic() - started]

    def replica() -> bool:
        return (n1.status().get("db") or {}).get("role") == "replica"

    wait_for(replica, 30, interval=0.5, what="n1's node seeing its database a replica")
    assert cluster.writable() == [cluster.new_primary]
    version = new.db.query("SELECT version FROM config_version", database="smartswitch")
    assert n1.db.query("SELECT version FROM config_version", database="smartswitch") == version

"""A rolling upgrade of a live three-node replication cluster, with no call lost.

The previous release (``PREVIOUS``: the last main before this release's first migration) is
checked out with ``git worktree`` and runs from it (``PYTHONPATH=<it>/src``, the same venv):
the databases are set up, provisioned and served by it. Then, one node at a time, while sipp
carries calls through the cluster:

1. the node is taken out of service: its customer sends it no new calls (the previous release
   has no ``smartswitch drain``: this is the manual procedure of docs/operations.md), the
   calls in progress on it end normally, then it is stopped (SIGTERM, exit 0), its outbox
   flushed;
2. it starts again on the new code;

meanwhile the other two nodes carry new calls. Before that, ``smartswitch db upgrade`` on the
primary applies the new (expand-only) migrations with the previous release's nodes running
(they keep working on the expanded schema; the new code reads the new columns, so the schema
goes first). Every node of the new code registers its version and schema, and one node is drained with the new ``smartswitch drain`` under traffic (its new
calls refused with 503 and Retry-After, its calls in progress completing) and restarted.

Over the whole run: no failed call in any sipp, every completed call has exactly one CDR on
the primary, and ``smartswitch audit`` is exact.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

import pytest

import smartswitch
from e2e.node import node_command
from e2e.sipp import SCENARIOS, SippOptions, SippResult, completed_call_ids, free_port
from smartswitch.store.migrate import head_revision

from .conftest import MariaDBFactory
from .harness import (
    CUSTOMER_IP,
    DIALLED,
    NODE_IPS,
    ClusterNode,
    Sipps,
    caller,
    cluster_member,
    outbox_empty,
    provisioning,
    start_supplier,
)
from .mariadb import wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.e2e]

#: The previous release: the last commit of main before migration 0008.
PREVIOUS = "afb0cab"
NEW_SRC = Path(smartswitch.__file__).resolve().parents[1]
# The newest migration of this code: what `db upgrade` brings the schema to.
HEAD = head_revision()
#: Calls on a node when it is taken out of service (they must end normally).
IN_FLIGHT = 6
#: Calls to each of the other nodes while one is out.
AROUND = 30


def _env(src: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(src)}


@pytest.fixture(scope="module")
def previous_release() -> Iterator[Path]:
    """The previous release's source tree, checked out beside this one."""
    root = NEW_SRC.parent
    found = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", f"{PREVIOUS}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.skip(f"the previous release {PREVIOUS} is not in this repository")
    where = Path(tempfile.mkdtemp(prefix="smartswitch-previous-")) / "tree"
    subprocess.run(
        ["git", "-C", str(root), "worktree", "add", "--detach", str(where), PREVIOUS],
        capture_output=True,
        check=True,
    )
    try:
        yield where / "src"
    finally:
        subprocess.run(
            ["git", "-C", str(root), "worktree", "remove", "--force", str(where)],
            capture_output=True,
            check=False,
        )


def cli(
    member: ClusterNode, env: Mapping[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``smartswitch ARGS --config`` of this member, run by the release in ``env``."""
    command = [*node_command(), *args, "--config", str(member.node.config_path)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)}: {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def connected(member: ClusterNode, calls: int) -> bool:
    return int(member.node.health()["call_states"].get("connected", 0)) >= calls


def idle(member: ClusterNode) -> bool:
    return int(member.node.health()["calls"]) == 0


def restart_on(member: ClusterNode, src: Path) -> None:
    member.node.spec.env = _env(src)
    member.node.start(health_timeout=30)


def test_rolling_upgrade_under_traffic_loses_no_call(
    previous_release: Path, tmp_path: Path, mariadb_factory: MariaDBFactory, sipps: Sipps
) -> None:
    old, new = _env(previous_release), _env(NEW_SRC)
    supplier = start_supplier(sipps)
    dbs = [mariadb_factory(f"db{i + 1}", server_id=i + 1) for i in range(3)]
    members = [
        cluster_member(
            tmp_path / f"node{i + 1}",
            ip,
            f"node{i + 1}",
            db,
            db_scheme="replication",
            primary_database_url=dbs[0].url,
        )
        for i, (ip, db) in enumerate(zip(NODE_IPS, dbs, strict=True))
    ]
    primary = members[0]

    # The cluster as the previous release built it.
    dbs[0].create_database()
    cli(primary, old, "cluster", "init-primary")
    document = tmp_path / "provision.yaml"
    document.write_text(provisioning(supplier.options.local_port))
    cli(primary, old, "provision", str(document))
    for member in members[1:]:
        cli(member, old, "cluster", "add-replica")
    for member in members:
        restart_on(member, previous_release)
    assert dbs[0].query("SELECT version_num FROM alembic_version", database="smartswitch") == [
        ("0007",)
    ]

    results: list[SippResult] = []
    try:
        # The schema first, live, while the previous release serves: its migrations only
        # expand, so the running nodes of the previous release keep working on it (the new
        # code reads columns the previous schema does not have: it needs the new schema).
        upgraded = cli(primary, new, "db", "upgrade")
        assert f"upgraded from 0007 to {HEAD}" in upgraded.stdout, upgraded.stdout
        for k, member in enumerate(members):
            others = [m for m in members if m is not member]
            in_flight = caller(
                sipps, f"in-flight-{k}", member.node, IN_FLIGHT, 20, duration_ms=3000
            )
            around = [
                caller(sipps, f"around-{k}-{m.node.sip_host}", m.node, AROUND, 5) for m in others
            ]
            wait_until(partial(connected, member, IN_FLIGHT), 20, f"node{k + 1}'s calls up")
            # Out of service: no new calls to it (the in-flight caller sent all it will); its
            # calls end normally, then it stops with its outbox delivered.
            wait_until(partial(idle, member), 30, f"node{k + 1}'s calls ended")
            assert member.node.stop() == 0, member.node.log_tail()
            restart_on(member, NEW_SRC)
            wait_until(partial(outbox_empty, member), 30, f"node{k + 1}'s outbox empty")
            results.append(in_flight.wait(timeout=60))
            results.extend(a.wait(timeout=60) for a in around)

        def every_node_reports(members: list[ClusterNode]) -> bool:
            rows = set(
                dbs[2].query("SELECT name, version, schema_head FROM nodes", database="smartswitch")
            )
            return rows == {(m.node.spec.config["node_name"], "0.1.0", HEAD) for m in members}

        wait_until(partial(every_node_reports, members), 20, f"every node reports {HEAD}")
        for member in members:
            status = member.status()
            assert (status["schema_head"], status["db_schema"]) == (HEAD, HEAD), status

        # A node of this release is drained with `smartswitch drain` under traffic.
        node2 = members[1]
        in_flight = caller(sipps, "drain-in-flight", node2.node, IN_FLIGHT, 20, duration_ms=4000)
        around = [
            caller(sipps, f"drain-around-{m.node.sip_host}", m.node, AROUND, 5)
            for m in (members[0], members[2])
        ]
        wait_until(partial(connected, node2, IN_FLIGHT), 20, "node2's calls up")
        drain = subprocess.Popen(
            [
                *node_command(),
                "drain",
                *("--config", str(node2.node.config_path)),
                *("--data-dir", str(node2.node.data_dir)),
                *("--deadline", "60"),
                *("--url", f"http://{node2.node.http_host}:{node2.node.http_port}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **new},
        )
        assert drain.stdout is not None
        first = drain.stdout.readline()
        assert first.startswith("draining "), first
        refused = sipps.start(
            "refused",
            SippOptions(
                scenario=SCENARIOS / "uac_expect_503_retry_after.xml",
                local_ip=CUSTOMER_IP,
                local_port=free_port(CUSTOMER_IP),
                remote=node2.node.sip_address,
                service=DIALLED,
                calls=2,
                rate=5,
                timeout_s=30,
            ),
        ).wait(timeout=40)
        assert (refused.successful, refused.failed) == (2, 0), refused.describe()
        rest, _ = drain.communicate(timeout=120)
        assert drain.returncode == 0, first + rest
        wait_until(lambda: not node2.node.running, 15, "node2 exited after its drain")
        assert node2.node.stop() == 0
        restart_on(node2, NEW_SRC)
        results.append(in_flight.wait(timeout=60))
        results.extend(a.wait(timeout=60) for a in around)

        # Not one call failed, through the whole run.
        for result in results:
            assert result.failed == 0, result.describe()
        completed: set[str] = set()
        for result in results:
            completed |= completed_call_ids(result.received)
        expected_calls = 3 * (IN_FLIGHT + 2 * AROUND) + IN_FLIGHT + 2 * AROUND
        assert sum(r.successful for r in results) == expected_calls == len(completed)

        # Every completed call has one CDR on the primary; the money is exact.
        for member in members:
            wait_until(partial(outbox_empty, member), 30, "outboxes empty")
        rows = dbs[0].query("SELECT call_id FROM cdrs", database="smartswitch")
        recorded = [str(row[0]) for row in rows]
        assert len(recorded) == len(set(recorded)), "a call has more than one CDR"
        assert set(recorded) == completed, (
            sorted(completed - set(recorded))[:5],
            sorted(set(recorded) - completed)[:5],
        )
        audit = cli(primary, new, "audit", "--database-url", dbs[0].url, check=False)
        assert audit.returncode == 0 and "exact" in audit.stdout, audit.stdout + audit.stderr
    finally:
        for member in members:
            if member.node.running:
                member.node.stop()

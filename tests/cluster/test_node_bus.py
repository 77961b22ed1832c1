"""The cluster bus in running nodes: three real nodes (replication scheme: a MariaDB primary and
two GTID replicas), real sipp.

- forged, altered, stale and replayed requests to a real node are each refused with 401 and
  counted by reason in its ``/metrics``; the old static bearer token is refused too;
- every node sees the others up with their heartbeat figures (``cluster status``, the Cluster
  page);
- node-level HA: node 3 killed with SIGKILL while sipp calls through nodes 1 and 2: 0 failed
  calls through them, node 3 shown down within 5 s in ``cluster status`` and on the Cluster
  page, and up again by itself once restarted.

Addresses: nodes on 127.0.0.11-13, the customer's sipp on 127.0.0.21, the supplier's on
127.0.0.31 (tests/cluster/harness.py). One cluster for the module.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import resource
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.node import node_command, start_all
from smartswitch import __version__
from smartswitch.cluster.signing import Signer, derive_key

from .harness import (
    NODE_IPS,
    SECRET,
    ClusterNode,
    Sipps,
    caller,
    cluster_member,
    provisioning,
    start_supplier,
)
from .mariadb import MariaDBInstance, skip_without_mariadb, wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.e2e]

#: The 5 s the issue promises between a node's death and it shown down.
SHOWN_DOWN_WITHIN = 5.0


class Cluster:
    def __init__(self, members: list[ClusterNode], tmp: Path, password: str) -> None:
        self.members = members
        self.tmp = tmp
        self.password = password

    @contextlib.contextmanager
    def page(self, member: ClusterNode) -> Iterator[httpx.Client]:
        """A logged-in web session on ``member`` (the read-only user made at set-up)."""
        with httpx.Client(base_url=f"http://{member.bus_address}", trust_env=False) as client:
            login = {"username": "watcher", "password": self.password}
            answer = client.post("/login", data=login)
            assert answer.status_code in (200, 303), answer.text
            yield client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    skip_without_mariadb()
    tmp = tmp_path_factory.mktemp("node-bus")
    sipps = Sipps(tmp)
    dbs = [MariaDBInstance(tmp, f"db{i + 1}", server_id=i + 1) for i in range(3)]
    members: list[ClusterNode] = []
    try:
        for db in dbs:
            db.initialize()
            db.start()
        supplier = start_supplier(sipps)
        members = [
            cluster_member(
                tmp / f"node{i + 1}",
                ip,
                f"node{i + 1}",
                db,
                db_scheme="replication",
                primary_database_url=dbs[0].url,
                capacity=200 + i,
            )
            for i, (ip, db) in enumerate(zip(NODE_IPS, dbs, strict=True))
        ]
        dbs[0].create_database()
        members[0].cli("cluster", "init-primary")
        document = tmp / "provision.yaml"
        document.write_text(provisioning(supplier.options.local_port))
        members[0].cli("provision", str(document))
        added = members[0].cli("user", "add", "watcher", "--role", "read-only")
        password = re.search(r"password: (\S+)", added.stdout)
        assert password, added.stdout
        for member in members[1:]:
            member.cli("cluster", "add-replica")
        start_all(member.node for member in members)
        yield Cluster(members, tmp, password.group(1))
    finally:
        sipps.stop_all()
        for member in members:
            if member.node.running:
                member.node.stop()
        for db in dbs:
            if db.is_running:
                db.stop()


# -- signed requests, by hand


def _signed(
    path: str,
    body: bytes,
    *,
    method: str = "POST",
    key: bytes | None = None,
    at: float | None = None,
    sender: str = "node1",
    to: str = "node2",
) -> dict[str, str]:
    signer = Signer(sender, derive_key(SECRET) if key is None else key)
    return signer.sign(method, path, body, to, time.time() if at is None else at)


def _send(
    member: ClusterNode, path: str, headers: dict[str, str], body: bytes = b"", method: str = "POST"
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{member.bus_address}{path}",
        data=body if method == "POST" else None,
        headers={**headers, "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _refusals(member: ClusterNode) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{member.bus_address}/metrics", timeout=3) as answer:
        text = answer.read().decode()
    found = re.findall(
        r'^smartswitch_cluster_bus_requests_refused_total\{reason="([a-z-]+)"\} (\d+)$',
        text,
        re.MULTILINE,
    )
    return {reason: int(count) for reason, count in found}


def test_forged_altered_stale_and_replayed_requests_are_refused_and_counted(
    cluster: Cluster,
) -> None:
    node2 = cluster.members[1]
    path = "/cluster/registrations"
    body = json.dumps({"node": "node1", "changes": []}).encode()
    before = _refusals(node2)

    # The real thing passes: the others' own traffic does too (heartbeats, registrations).
    assert _send(node2, path, _signed(path, body), body) == (200, {"applied": 0})

    forged = _signed(path, body, key=derive_key("not-the-cluster-secret-at-all"))
    assert _send(node2, path, forged, body) == (401, {"detail": "forged"})

    altered_body = json.dumps({"node": "node1", "changes": [{"kind": "set"}]}).encode()
    assert _send(node2, path, _signed(path, body), altered_body) == (401, {"detail": "altered"})

    stale = _signed(path, body, at=time.time() - 31)
    assert _send(node2, path, stale, body) == (401, {"detail": "stale"})

    once = _signed("/cluster/status", b"", method="GET")
    status, answer = _send(node2, "/cluster/status", once, method="GET")
    assert status == 200 and answer["node"] == "node2"
    replayed = _send(node2, "/cluster/status", once, method="GET")
    assert replayed == (401, {"detail": "replayed"})

    # The static bearer token the bus replaced opens nothing.
    token = hmac.new(SECRET.encode(), b"smartswitch-status", hashlib.sha256).hexdigest()
    bearer = {"Authorization": f"Bearer {token}"}
    assert _send(node2, "/cluster/status", bearer, method="GET") == (401, {"detail": "missing"})

    after = _refusals(node2)
    grew = {reason: after[reason] - before.get(reason, 0) for reason in after}
    expected = {"forged": 1, "altered": 1, "stale": 1, "replayed": 1, "missing": 1}
    assert {r: n for r, n in grew.items() if n} == expected, grew


# -- membership


def _cli_status(member: ClusterNode) -> tuple[int, dict[str, dict[str, Any]]]:
    command = [*node_command(), "cluster", "status", "--format", "json"]
    done = subprocess.run(
        [*command, "--config", str(member.node.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    rows = json.loads(done.stdout or "[]")
    return done.returncode, {str(row["node"]): row for row in rows}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _page_state(page: httpx.Client, node: str) -> str:
    """The node's state in the Cluster page's table (the part htmx refreshes)."""
    html = page.get("/cluster", headers={"HX-Request": "true"}).text
    row = re.search(
        rf"<tr>\s*<td>{node}</td>\s*<td><span class=\"state \w+\">([\w ]+)</span>", html
    )
    assert row, html
    return row.group(1)


def test_every_node_sees_the_others_with_their_figures(cluster: Cluster) -> None:
    node1, node2, node3 = cluster.members

    def all_up() -> bool:
        code, rows = _cli_status(node3)
        return code == 0 and set(rows) == {"node1", "node2", "node3"}

    def every_node_heard_the_others() -> bool:
        # Each node starts hearing the others at its own moment: node 3 seeing all three does
        # not mean node 2 has heard node 3 yet (seen in CI when this test ran first).
        tables = [member.members() for member in (node1, node2, node3)]
        return all(len(t) == 3 and all(s["up"] for s in t.values()) for t in tables)

    wait_until(all_up, 20, "cluster status on node 3 shows three nodes up")
    wait_until(every_node_heard_the_others, 20, "every node has heard the other two")
    _, rows = _cli_status(node3)
    for i, name in enumerate(("node1", "node2", "node3")):
        row = rows[name]
        assert row["state"] == "up" and row["last_seen"] < 3.0, row
        assert row["capacity"] == 200 + i and row["version"] == __version__, row
        assert row["calls"] == 0 and row["outbox_depth"] == 0, row
    assert rows["node1"]["db_role"] == "primary"
    assert rows["node2"]["db_role"] == rows["node3"]["db_role"] == "replica"
    table = node1.cli("cluster", "status").stdout
    assert table.count(" up ") == 3 and "capacity" in table, table
    with cluster.page(node1) as page:
        assert [_page_state(page, n) for n in ("node1", "node2", "node3")] == ["up"] * 3
    members = node2.members()
    assert members["node3"]["heartbeat"]["capacity"] == 202


def test_node3_killed_mid_traffic_costs_nodes_1_and_2_no_call_and_is_shown_down(
    cluster: Cluster, sipps: Sipps
) -> None:
    """Node-level HA: a node down affects only what goes through it."""
    node1, node2, node3 = cluster.members
    wait_until(lambda: node1.members()["node3"]["up"], 20, "node 3 up on node 1")
    calls = 120
    callers = [
        caller(sipps, "via-node1", node1.node, calls=calls, rate=10, duration_ms=2000),
        caller(sipps, "via-node2", node2.node, calls=calls, rate=10, duration_ms=2000),
    ]
    time.sleep(4)  # calls in progress through both
    with cluster.page(node1) as page:
        assert _page_state(page, "node3") == "up"
        node3.node.kill()  # SIGKILL: no farewell
        killed = time.monotonic()
        seen: dict[str, float] = {}
        while len(seen) < 2 and time.monotonic() - killed < 10:
            if "table" not in seen and not node1.members()["node3"]["up"]:
                seen["table"] = time.monotonic() - killed
            if "page" not in seen and _page_state(page, "node3") == "down":
                seen["page"] = time.monotonic() - killed
            time.sleep(0.05)
    assert set(seen) == {"table", "page"}, seen
    # `cluster status` is a process of its own (imports, the nodes table, bus requests): one
    # started now shows it down; its own time to answer on this loaded host is reported.
    started = time.monotonic() - killed
    cpu = _children_cpu()
    _, rows = _cli_status(node1)
    assert rows["node3"]["state"] == "down", rows["node3"]
    seen["cli started"], seen["cli answered"] = started, time.monotonic() - killed
    seen["cli cpu"] = _children_cpu() - cpu
    print("node 3 shown down after (s):", {k: round(v, 2) for k, v in seen.items()})
    assert seen["table"] <= SHOWN_DOWN_WITHIN and seen["page"] <= SHOWN_DOWN_WITHIN, seen
    # The others' view agrees.
    assert not node2.members()["node3"]["up"]

    results = [proc.wait() for proc in callers]
    for result in results:
        assert result.failed == 0 and result.successful == calls, result.describe()

    # Back by itself once restarted.
    node3.node.start()
    restarted = time.monotonic()
    wait_until(lambda: node1.members()["node3"]["up"], 10, "node 3 up again on node 1")
    back = time.monotonic() - restarted
    print(f"node 3 up again on node 1 {back:.1f} s after its start returned")
    code, rows = _cli_status(node1)
    assert rows["node3"]["state"] == "up" and code == 0, rows
    with cluster.page(node1) as page:
        assert _page_state(page, "node3") == "up"

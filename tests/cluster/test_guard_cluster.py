"""Password guessing against two whole nodes of a cluster (issue 14, item 1): failures on any
node count, shared over the cluster bus (cluster/guardsync.py on the NodeBus).

Two real nodes (replication scheme: a MariaDB primary and a GTID replica), one cluster secret,
real sipp for the subscriber's phone, and the attacker of tests/e2e/attacker.py: a dictionary
attack spread over both nodes (four guesses in five to node 1) and 100 loopback sources (two
guesses each, under every per-address limit), 200 guesses at 40 a second with the right one
late. It puts alice into back-off on both nodes, node 2 before it checked its own limit's
worth of failures; the right guess is refused unchecked, while alice's phone, from the address where it
last succeeded (on node 1 only), keeps registering on both. The failures show in each node's
``/metrics`` and in its log, read by the real fail2ban-regex with the filter we ship.

Addresses: nodes on 127.0.0.11-12 (tests/cluster/harness.py), their databases on
127.0.0.81-82, the phone on 127.0.0.22, the attackers on 127.0.40.1-100. One cluster for the
module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.attacker import Tally, attack, dictionary, metrics
from e2e.node import dump_yaml
from e2e.sipp import SippOptions, SippResult, free_port

from .harness import ClusterNode, Sipps, provisioning, replicated_cluster
from .mariadb import skip_without_mariadb, wait_until

pytestmark = [pytest.mark.mariadb, pytest.mark.e2e]

DB_HOSTS = ("127.0.0.81", "127.0.0.82")  # the primary, the replica
PHONE_IP = "127.0.0.22"
ATTACKERS = [f"127.0.40.{n}" for n in range(1, 101)]
PASSWORD = "letmein300letmein"  # passes the policy; in the attacker's dictionary
ACCOUNT_FAIL_LIMIT = 10  # GuardSettings' default: the nodes run with it
FAIL2BAN_FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "smartswitch.conf"


@dataclass
class Pair:
    members: list[ClusterNode]
    sipps: Sipps
    registrations: int = 0

    def register(self, member: ClusterNode) -> SippResult:
        """alice's phone registers on ``member`` (sipp, the right password, from PHONE_IP)."""
        self.registrations += 1
        options = SippOptions(
            scenario="reg_phone",
            local_ip=PHONE_IP,
            local_port=free_port(PHONE_IP),
            remote=member.node.sip_address,
            service="alice",
            calls=1,
            duration_ms=100,
            timeout_s=20,
            keys={"expires": "600"},
            extra=("-au", "alice", "-ap", PASSWORD),
        )
        return self.sipps.start(f"phone{self.registrations}-{member.name}", options).wait()


def _document(supplier_port: int) -> str:
    """The cluster tests' provisioning, and alice."""
    document: dict[str, Any] = yaml.safe_load(provisioning(supplier_port))
    document["subscribers"] = [
        {"username": "alice", "password": PASSWORD, "account": "acme", "tariff": "retail"}
    ]
    return dump_yaml(document)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    skip_without_mariadb()
    workdir = tmp_path_factory.mktemp("guard-cluster")
    with replicated_cluster(workdir, DB_HOSTS, _document) as cluster:
        node1, node2 = cluster.members
        for member, other in ((node1, node2), (node2, node1)):
            wait_until(
                lambda m=member, o=other: m.members()[o.name]["up"],  # type: ignore[misc]
                20,
                f"{member.name} to see {other.name} up",
            )
        sipps = Sipps(workdir / "phone")
        try:
            yield Pair(cluster.members, sipps)
        finally:
            sipps.stop_all()


def _ok(result: SippResult) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (1, 0), result.describe()


def _fail2ban_sources(log: Path) -> set[str]:
    binary = shutil.which("fail2ban-regex")
    if binary is None:
        pytest.fail("fail2ban is not installed: run scripts/install-system-deps.sh")
    done = subprocess.run(
        [binary, "-o", "ip", str(log), str(FAIL2BAN_FILTER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(done.stdout.split())


def _report(tally: Tally, checked: list[float], refused: list[float]) -> None:
    print(
        f"\ntwo nodes, {len(ATTACKERS)} sources: {tally.attempts} guesses in "
        f"{tally.seconds:.1f} s, answers {dict(sorted(tally.answers.items()))}, the right "
        f"password got {tally.right_guess_answer}; checked per node {checked}, refused "
        f"unchecked per node {refused}"
    )


def test_a_dictionary_attack_over_both_nodes_backs_the_account_off_on_both(pair: Pair) -> None:
    node1, node2 = pair.members
    # The phone's usual address: it succeeded there, on node 1 only; node 2 learns it over
    # the bus.
    _ok(pair.register(node1))
    wait_until(
        lambda: (
            metrics(node2.node).get('smartswitch_guard_cluster_events_total{kind="success"}') == 1
        ),
        10,
        "node2 to hear of the phone's success on node1",
    )

    # Four guesses in five to node 1, one to node 2: node 2 alone would need 50 guesses in all
    # before it saw its own limit's worth; it backs off long before, on node 1's failures.
    guesses = dictionary(200, right_at=150, right=PASSWORD)
    targets = [node1.node] * 4 + [node2.node]
    tally = attack(targets, ATTACKERS, guesses, PASSWORD, rate=40)
    after = [metrics(member.node) for member in pair.members]
    checked = [m['smartswitch_digest_failures_total{reason="bad-password"}'] for m in after]
    refused = [m['smartswitch_auth_refused_total{reason="account-backoff"}'] for m in after]
    _report(tally, checked, refused)

    assert tally.attempts == 200 and tally.answers["200"] == 0, tally.answers
    assert tally.right_guess_answer == "403"  # refused like any wrong guess, never checked
    assert sum(checked) + sum(refused) == 200
    for m in after:
        assert m["smartswitch_account_backoffs_total"] == 1
        assert m["smartswitch_accounts_under_attack"] == 1
        assert m["smartswitch_sources_banned"] == 0  # nobody over the per-address limit
        # Each node counted the other's failures as its own.
        assert m['smartswitch_guard_cluster_events_total{kind="failure"}'] >= 1
    # One shared count: node 2 went into back-off having checked fewer failures than its
    # limit, and both together checked fewer than two separate nodes, each stopping at its
    # own limit, would have (the rest were refused before any digest work).
    assert checked[1] < ACCOUNT_FAIL_LIMIT, checked
    assert sum(checked) < 2 * ACCOUNT_FAIL_LIMIT, checked
    assert all(n > 0 for n in refused), refused

    # alice is in back-off on both nodes; her phone, from its usual address, registers on both.
    _ok(pair.register(node2))
    _ok(pair.register(node1))
    for member in pair.members:
        assert metrics(member.node)["smartswitch_accounts_under_attack"] == 1

    # The operator's view: the log lines fail2ban reads, on each node; attackers only.
    banned: set[str] = set()
    for member in pair.members:
        log = member.node.log_text()
        assert "smartswitch security: account-backoff account=alice" in log
        assert re.search(
            r"smartswitch security: refused source=127\.0\.40\.\d+ account=alice "
            r"reason=account-backoff",
            log,
        )
        found = _fail2ban_sources(member.node.log_path)
        assert found and found <= set(ATTACKERS), found - set(ATTACKERS)
        banned |= found
    assert PHONE_IP not in banned

"""Fixtures for the high-availability tests: a network lab per module, nodes holding a
shared IP with real keepalived, a customer probing it.

- ``lab``: a :class:`~netlab.NetLab` with hosts n1, n2, n3 (switch nodes), customer and
  supplier, made once per module (well under a second) and torn down at its end, also when a
  test failed: every process it started is killed by PID and its namespaces are deleted.
  Leftovers of a crashed earlier run (namespaces ``sslab<dead pid>-*``) are removed first.
- ``vip_cluster``: the module's three :class:`~ha.harness.VipNode` and the customer's
  :class:`~ha.harness.Prober`; ``cluster`` gives it back to each test whole: dead nodes
  restarted, cuts healed, one holder, the others BACKUP, the customer answered.
- ``ha_timings``: where tests put measured seconds; printed at the end of the run.

Everything here needs root, iproute2, nftables, keepalived and arping
(``scripts/install-system-deps.sh``); without them the tests skip. The tests are marked
``netns`` (and so ``e2e``: out of the fast suite) and timing-sensitive: run them alone, e.g.
``flock /tmp/ss-heavy.lock pytest -m netns``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netlab import NetLab, remove_stale, standard_hosts

from .harness import SHARED_IP, Prober, VipCluster, VipNode, settings_for, summary

_TIMINGS: dict[str, list[float]] = {}
NODES = ["n1", "n2", "n3"]
#: The prober's own limit: it stops by itself even if nothing kills it.
PROBE_SECONDS = 1800.0


def _missing(*programs: str) -> list[str]:
    return [p for p in programs if not shutil.which(p)]


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if missing := _missing("ip", "nft", "ping"):
        pytest.skip("missing " + ", ".join(missing) + " (scripts/install-system-deps.sh)")
    remove_stale()
    with NetLab(standard_hosts(3)) as made:
        yield made


@pytest.fixture
def ha_timings() -> dict[str, list[float]]:
    return _TIMINGS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TIMINGS:
        terminalreporter.section("HA timings")
        for what, values in _TIMINGS.items():
            terminalreporter.write_line(f"{what:<48} {summary(values)}")


@pytest.fixture(scope="module")
def vip_cluster(lab: NetLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VipCluster]:
    if missing := _missing("keepalived", "arping", "setpriv"):
        pytest.skip("missing " + ", ".join(missing) + " (scripts/install-system-deps.sh)")
    base = tmp_path_factory.mktemp("vip")
    nodes = {}
    for name in NODES:
        data_dir = base / name
        data_dir.mkdir(mode=0o700)
        nodes[name] = VipNode(lab, name, Path(data_dir), settings_for(lab, name, NODES))
    prober = Prober(lab, "customer", SHARED_IP, PROBE_SECONDS)
    cluster = VipCluster(lab, nodes, prober)
    try:
        for node in nodes.values():
            node.start()
        yield cluster
    finally:
        for node in nodes.values():
            node.stop()


@pytest.fixture
def cluster(vip_cluster: VipCluster) -> VipCluster:
    """The module's nodes, all running, one holding the shared IP and reached by the customer."""
    vip_cluster.ready()
    return vip_cluster

"""Fixtures: private MariaDB servers and a Galera cluster for the cluster tests.

- ``mariadb_factory(name, host=..., server_id=..., start=True)`` makes a
  :class:`~tests.cluster.mariadb.MariaDBInstance` under the test's tmp_path, initialized and
  (by default) started; every instance it made is stopped by PID at teardown, also when the
  test failed.  Server ids count up from 1 unless given.
- ``galera_cluster``: three Galera nodes on 127.0.0.1, all synced when the test starts.  The
  cluster is started once per module (about 10 s) and each test gets it back whole: a node
  a previous test killed or stopped is restarted (about 5 s) before the next test.
- ``cluster_timings``: a dict where tests put measured seconds; shown at the end of the run.

Missing programs skip the tests, naming the Debian packages (``scripts/install-system-deps.sh``
installs them).  The Galera nodes run as ``mysql`` (see mariadb.py), so their directory is a
``tempfile.mkdtemp()`` under /tmp rather than pytest's 0700 tmp_path; it is removed at the end,
after the nodes' error logs are copied into a pytest tmp directory for a post-mortem.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from .harness import Sipps
from .mariadb import GaleraCluster, MariaDBInstance, missing_programs, skip_without_mariadb

_TIMINGS: dict[str, float] = {}


class MariaDBFactory(Protocol):
    def __call__(
        self,
        name: str = ...,
        *,
        host: str = ...,
        server_id: int | None = ...,
        start: bool = ...,
        **kwargs: Any,
    ) -> MariaDBInstance: ...


@pytest.fixture
def cluster_timings() -> dict[str, float]:
    """Seconds measured by the tests, printed in the terminal summary."""
    return _TIMINGS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TIMINGS:
        terminalreporter.section("MariaDB / Galera timings (s)")
        for what, seconds in _TIMINGS.items():
            terminalreporter.write_line(f"{what:<56} {seconds:7.3f}")


@pytest.fixture
def mariadb_factory(tmp_path: Path) -> Iterator[MariaDBFactory]:
    """Makes private MariaDB instances under tmp_path; all stopped at teardown."""
    skip_without_mariadb()
    made: list[MariaDBInstance] = []

    def make(
        name: str = "db",
        *,
        host: str = "127.0.0.1",
        server_id: int | None = None,
        start: bool = True,
        **kwargs: Any,
    ) -> MariaDBInstance:
        instance = MariaDBInstance(
            tmp_path,
            name,
            host,
            server_id=len(made) + 1 if server_id is None else server_id,
            **kwargs,
        )
        made.append(instance)
        instance.initialize()
        if start:
            instance.start()
        return instance

    yield make
    errors = []
    for instance in made:
        try:
            instance.stop()
        except Exception as exc:
            errors.append(f"{instance.name}: {exc}")
    if errors:
        pytest.fail("stopping private MariaDB instances: " + "; ".join(errors))


@pytest.fixture(scope="module")
def _galera_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GaleraCluster]:
    if missing := missing_programs(galera=True):
        pytest.skip("Galera not installed: missing " + ", ".join(missing))
    base = Path(tempfile.mkdtemp(prefix="smartswitch-galera-"))
    cluster = GaleraCluster(base)
    try:
        cluster.start()
        _TIMINGS["galera: bootstrap node 0"] = cluster.timings["bootstrap"]
        _TIMINGS["galera: join nodes 1 and 2 (rsync SST)"] = cluster.timings["join"]
        _TIMINGS["galera: start, all three synced"] = cluster.timings["start"]
        yield cluster
    finally:
        try:
            cluster.stop_all()
        finally:
            logs = tmp_path_factory.mktemp("galera-logs")
            for node in cluster:
                for log in (node.error_log, node.console_log):
                    if log.exists():
                        shutil.copy(log, logs / f"{node.name}-{log.name}")
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def galera_cluster(_galera_module: GaleraCluster) -> GaleraCluster:
    """The module's three-node Galera cluster, every node running and synced."""
    for i, node in enumerate(_galera_module):
        if not node.is_running:
            _TIMINGS[f"galera: node {i} restarted for the next test"] = _galera_module.start_node(i)
    _galera_module.wait_synced()
    return _galera_module


@pytest.fixture
def sipps(tmp_path: Path) -> Iterator[Sipps]:
    """sipp runs of one test, every one stopped by PID at teardown."""
    group = Sipps(tmp_path)
    yield group
    group.stop_all()

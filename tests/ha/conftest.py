"""Fixtures for the high-availability tests: a network lab per module.

- ``lab``: a :class:`~netlab.NetLab` with hosts n1, n2, n3 (switch nodes), customer and
  supplier, made once per module (well under a second) and torn down at its end, also when a
  test failed: every process it started is killed by PID and its namespaces are deleted.
  Leftovers of a crashed earlier run (namespaces ``sslab<dead pid>-*``) are removed first.

Everything here needs root, iproute2 and nftables (``scripts/install-system-deps.sh``);
without them the tests skip. The tests are marked ``netns`` (and so ``e2e``: out of the fast
suite) and timing-sensitive: run them alone, e.g. ``flock /tmp/ss-heavy.lock pytest -m netns``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from netlab import NetLab, remove_stale, standard_hosts


def _missing() -> list[str]:
    return [p for p in ("ip", "nft", "ping") if not shutil.which(p)]


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if missing := _missing():
        pytest.skip("missing " + ", ".join(missing) + " (scripts/install-system-deps.sh)")
    remove_stale()
    with NetLab(standard_hosts(3)) as made:
        yield made

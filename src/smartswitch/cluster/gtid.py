"""MariaDB global transaction ids, and the comparisons promotion decisions are made with.

A MariaDB GTID is ``domain-server-seq`` (``0-1-105``): the replication domain, the
``server_id`` of the server that first wrote the transaction, and a sequence number. A
*position* (``@@gtid_binlog_pos``, ``@@gtid_slave_pos``, ``@@gtid_current_pos``) is a
comma-separated list with at most one GTID per domain: the last transaction of each domain.
A *state* (``@@gtid_binlog_state``) holds the last GTID per domain **and server**.

Two questions are asked of them, and they need different comparisons:

* **Who is ahead?** Replicas of one primary receive one linear history per domain
  (``gtid_strict_mode`` refuses anything out of order), so within a domain the higher
  sequence number is the longer history: :func:`behind` compares per domain.
* **What does the old primary have that the new one lacks?** After a promotion the two
  histories may have diverged: the old primary wrote ``0-1-104`` and ``0-1-105`` that never
  left it, while the new primary went on from ``0-1-103`` with ``0-2-104``... A per-domain
  comparison would call the old primary "behind" (105 < 106) and miss both. So errant
  transactions are found per domain *and server*: for each ``(domain, server)`` the old
  primary wrote, every sequence number above the new primary's last one from that server
  is missing there (:func:`errant`). Within one (domain, server) pair the numbers of one
  linear history only grow, so "above the last one seen" is exactly "not seen".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ErrantRange",
    "Gtid",
    "GtidSet",
    "behind",
    "errant",
    "format_position",
    "parse_position",
]

_GTID = re.compile(r"^\s*(\d+)-(\d+)-(\d+)\s*$")


@dataclass(frozen=True, slots=True, order=True)
class Gtid:
    """One MariaDB GTID: ``domain-server-seq``."""

    domain: int
    server: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> Gtid:
        match = _GTID.match(text)
        if match is None:
            raise ValueError(f"not a MariaDB GTID: {text!r}")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    def __str__(self) -> str:
        return f"{self.domain}-{self.server}-{self.seq}"


def parse_position(text: str | None) -> tuple[Gtid, ...]:
    """``'0-1-105,1-3-7'`` (or empty) as GTIDs, sorted by domain and server."""
    if not text or not text.strip():
        return ()
    return tuple(sorted(Gtid.parse(part) for part in text.split(",") if part.strip()))


def format_position(gtids: Iterable[Gtid]) -> str:
    return ",".join(str(g) for g in sorted(gtids))


@dataclass(frozen=True, slots=True)
class GtidSet:
    """What a server has: the last sequence number per ``(domain, server)``.

    Built from ``@@gtid_binlog_state`` merged with ``@@gtid_slave_pos`` (a replica set up from
    a snapshot has applied history it never binlogged: only its slave position says so).
    """

    last: Mapping[tuple[int, int], int]

    @classmethod
    def of(cls, *positions: str | Iterable[Gtid] | None) -> GtidSet:
        last: dict[tuple[int, int], int] = {}
        for position in positions:
            gtids = parse_position(position) if isinstance(position, str | None) else position
            for g in gtids:
                key = (g.domain, g.server)
                last[key] = max(last.get(key, 0), g.seq)
        return cls(last)

    def domains(self) -> dict[int, Gtid]:
        """The last GTID of each domain (the highest sequence number): a position."""
        out: dict[int, Gtid] = {}
        for (domain, server), seq in self.last.items():
            if domain not in out or seq > out[domain].seq:
                out[domain] = Gtid(domain, server, seq)
        return out

    def __str__(self) -> str:
        return format_position(Gtid(d, s, q) for (d, s), q in self.last.items())


def behind(mine: str | Iterable[Gtid], theirs: str | Iterable[Gtid]) -> dict[int, int]:
    """By how many transactions ``mine`` is behind ``theirs``, per domain (only the domains
    where it is). Both are positions of replicas of one history (see the module docstring)."""
    a = GtidSet.of(mine).domains()
    b = GtidSet.of(theirs).domains()
    out: dict[int, int] = {}
    for domain, gtid in b.items():
        have = a[domain].seq if domain in a else 0
        if gtid.seq > have:
            out[domain] = gtid.seq - have
    return out


@dataclass(frozen=True, slots=True)
class ErrantRange:
    """Transactions ``domain-server-first`` .. ``domain-server-last`` that one server has and
    the other lacks."""

    domain: int
    server: int
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        if self.first == self.last:
            return f"{self.domain}-{self.server}-{self.first}"
        return f"{self.domain}-{self.server}-{self.first}..{self.last}"


def errant(
    old: GtidSet, new: GtidSet, fork: str | Iterable[Gtid] | None = None
) -> tuple[ErrantRange, ...]:
    """The transactions in ``old`` that ``new`` does not have, per (domain, server).

    ``fork`` is where the two histories parted, when known: the new primary's position at the
    moment it was promoted (kept in the promotion's history row). Everything the old primary
    wrote at or below it in a domain is shared history, even where the new server cannot
    show it transaction by transaction (a replica loaded from a snapshot has no binlog of the
    history before it). Without it, only what ``new`` shows counts as shared: that may name
    shared transactions as errant, never the reverse (a rejoin then takes a snapshot it did
    not strictly need, which is safe).

    Sequence numbers of one server in one domain are not dense (other servers' transactions
    take numbers in between), so a range names the *span* of possibly missing numbers:
    ``0-1-104..105`` means "whatever server 1 wrote in domain 0 after 103". Empty when the new
    server has everything the old one wrote.
    """
    shared = GtidSet.of(fork).domains() if fork is not None else {}
    out: list[ErrantRange] = []
    for (domain, server), seq in sorted(old.last.items()):
        have = new.last.get((domain, server), 0)
        if domain in shared:
            have = max(have, shared[domain].seq)
        if seq > have:
            out.append(ErrantRange(domain, server, have + 1, seq))
    return tuple(out)

"""The configuration reader: a process of its own, so that reading a carrier's rate deck
never holds the node's interpreter lock.

Started by :class:`smartswitch.runtime.reload.ConfigLoader` as ``python -m
smartswitch.runtime.reader``; nothing else runs it. Requests come on its standard input and
answers go out on its standard output, pickled and length-prefixed (the framing of
:class:`multiprocessing.connection.Connection`; both ends are the node's own code). The first
message is the database URL (not a command-line argument, which ``ps`` would show with its
password). Each request after it is ``known``, the digests of the tariffs the node has (by
tariff id); the answer is read in one transaction
(:func:`~smartswitch.store.snapshot.read_parts`) and streamed:

- ``("parts", parts)``: the snapshot without the rates;
- ``("lines", tariff_id, lines)``: the rate lines of each tariff whose digest is not in
  ``known``, in the order of ``parts.tariffs``, :data:`CHUNK` at a time (the node assembles
  one while the next is on its way);
- ``("done",)``.

Or ``("error", text)`` if it could not be read. End of input ends the process (the node closed
the pipe, or died). Ctrl-C at a terminal reaches the whole process group: the reader ignores
it and leaves stopping to the node.
"""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection

from sqlalchemy.orm import Session

from smartswitch.store.database import create_sync_engine
from smartswitch.store.snapshot import RateLine, SnapshotParts, read_parts

#: Rate lines per message.
CHUNK = 5000


def serve(requests: Connection, answers: Connection) -> None:
    engine = create_sync_engine(requests.recv())
    try:
        while True:
            try:
                known = requests.recv()
            except EOFError:
                return
            try:
                with Session(engine) as session, session.begin():
                    parts, lines = read_parts(session, known)
            except Exception as exc:  # the node logs it and keeps its configuration
                answers.send(("error", f"{type(exc).__name__}: {exc}"))
                continue
            _stream(answers, parts, lines)
            del parts, lines  # half a million lines, after a first read: not kept idle
    finally:
        engine.dispose()


def _stream(answers: Connection, parts: SnapshotParts, lines: dict[int, list[RateLine]]) -> None:
    answers.send(("parts", parts))
    for head in parts.tariffs:
        found = lines.pop(head.id, [])
        for start in range(0, len(found), CHUNK):
            answers.send(("lines", head.id, found[start : start + CHUNK]))
    answers.send(("done",))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print goes to the log, not into the answers
    serve(Connection(0, writable=False), answers)


if __name__ == "__main__":
    main()

"""A node's ``/metrics`` read from inside a lab host, once or every ``INTERVAL`` s.

Run inside a host (``python -m ha.metricspoll URL INTERVAL DURATION``): each reading prints
one JSON line ``{"t": <time.monotonic() once answered>, "m": {"name{labels}": value, ...}}``
(the machine's monotonic clock, the same in every namespace, so the test compares it with
its own). ``INTERVAL`` 0: one reading, then exit. It stops by itself after ``DURATION`` s; a
reading that fails (the node restarting) is skipped.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$")


def parse(text: str) -> dict[str, float]:
    """Prometheus text as ``{"name{labels}": value}`` (comments left out)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is not None:
            try:
                found[match.group(1)] = float(match.group(2))
            except ValueError:
                continue
    return found


def read(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=2) as answer:
        return parse(answer.read().decode())


def main(argv: list[str]) -> int:
    url, interval, duration = argv[0], float(argv[1]), float(argv[2])
    started = time.monotonic()
    while True:
        try:
            metrics = read(url)
            # Stamped once the answer is in: the counts are then at most this recent (a
            # busy node answers late; a stamp taken before asking made them look older).
            print(json.dumps({"t": time.monotonic(), "m": metrics}), flush=True)
        except OSError:
            if interval <= 0:
                raise
        if interval <= 0 or time.monotonic() - started >= duration:
            return 0
        time.sleep(interval)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

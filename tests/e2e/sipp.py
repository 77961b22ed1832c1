"""Run sipp and read what it leaves behind.

Plain library code (no pytest) so that ``bench/calls.py`` uses the same runner
as the end-to-end tests. A :class:`Sipp` is one sipp process, UAC or UAS, with
its files in its own directory:

- ``stats.csv`` from ``-trace_stat -stf``: ``;``-separated, a header line, then
  one line per dump; the last line is the final state. Counters come in pairs,
  ``SuccessfulCall(P)`` (this period) and ``SuccessfulCall(C)`` (cumulative).
- ``messages.log`` from ``-trace_msg -message_file``: every SIP message sent
  and received, each after a line of dashes and a timestamp.
- ``errors.log`` from ``-trace_err -error_file``: unexpected messages and
  aborted calls, the first place to look when a call fails.
- ``stdout.txt`` and ``stderr.txt``: the final statistics screen, fatal errors.

sipp's exit code (its manual, "Exit codes"): 0 all calls succeeded, 1 at least
one call failed, 97 exit on an internal command, 99 normal exit without calls
processed, -1 (255) fatal error, -2 (254) fatal error binding a socket.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SCENARIOS = Path(__file__).resolve().with_name("scenarios")

#: Scenarios compiled into sipp, selected with ``-sn`` instead of ``-sf``.
BUILTIN_SCENARIOS = frozenset(
    {"uac", "uas", "regexp", "branchc", "branchs", "uac_pcap", "3pcc-C-A", "3pcc-C-B"}
)

#: Debian's sipp has no TLS (``-t l1``): tests/e2e/stunnel.py puts TLS in front of ``tcp``.
Transport = Literal["udp", "tcp"]

# -t u1: one UDP socket for all calls; t1: one TCP connection for all calls
# (a UAS in t1 mode still accepts every connection made to it).
_TRANSPORT_FLAG: dict[str, str] = {"udp": "u1", "tcp": "t1"}

# RFC 3261 7.3.3 compact header names, so lookups by the long name also find
# headers a peer sent in compact form.
_COMPACT: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "v": "via",
    "f": "from",
    "t": "to",
    "l": "content-length",
    "c": "content-type",
    "e": "content-encoding",
    "k": "supported",
    "s": "subject",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "x": "session-expires",
}

# A message log entry starts with a line of dashes and a timestamp, then
# "UDP message received [518] bytes :" or "TCP message sent (313 bytes):".
_ENTRY_SEPARATOR = re.compile(r"^-{20,}(?: .*)?$", re.MULTILINE)
_ENTRY_HEAD = re.compile(r"^(?P<transport>\w+) message (?P<direction>received|sent)\b")


def sipp_binary() -> str:
    """Path of the sipp executable; scripts/install-system-deps.sh installs it."""
    path = shutil.which("sipp")
    if path is None:
        raise FileNotFoundError(
            "sipp is not installed: run scripts/install-system-deps.sh (Debian: sip-tester)"
        )
    return path


def sipp_version() -> str:
    """First non-empty line of ``sipp -v``, e.g. ``SIPp v3.6.1-SCTP-PCAP-RTPSTREAM.``."""
    out = subprocess.run(
        [sipp_binary(), "-v"], capture_output=True, text=True, check=False, timeout=10
    )
    for line in (out.stdout + out.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host``.

    SIP listens on both at the same port (RFC 3261 18), and so do the node and
    sipp in TCP mode; the kernel hands out a TCP port, and it is kept only if
    the same UDP port is free too. Another process can still take it before
    it is used: the window is short and the tests run one at a time.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One SIP message as sipp logged it."""

    direction: str
    """``received`` or ``sent``, from sipp's point of view."""
    transport: str
    """``UDP`` or ``TCP``."""
    text: str
    """The message, line ends normalised to LF."""

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        return None if self.is_response else self.start_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        """The response status code, or None for a request."""
        if not self.is_response:
            return None
        parts = self.start_line.split(" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    @property
    def reason(self) -> str:
        """The response's reason phrase ("" for a request)."""
        parts = self.start_line.split(" ", 2)
        return parts[2] if self.is_response and len(parts) > 2 else ""

    def header_lines(self) -> list[tuple[str, str]]:
        """(lower-cased long name, value) of every header line, folded lines joined."""
        head = self.text.split("\n\n", 1)[0]
        lines: list[str] = []
        for line in head.split("\n")[1:]:
            if line[:1] in (" ", "\t") and lines:
                lines[-1] += " " + line.strip()  # RFC 3261 7.3.1 line folding
            elif line.strip():
                lines.append(line)
        result: list[tuple[str, str]] = []
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            result.append((_COMPACT.get(key, key), value.strip()))
        return result

    def headers(self, name: str) -> list[str]:
        """Every value of header ``name`` (long or compact name, any case)."""
        key = name.lower()
        key = _COMPACT.get(key, key)
        return [value for hname, value in self.header_lines() if hname == key]

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    @property
    def call_id(self) -> str | None:
        return self.header("call-id")

    def summary(self) -> str:
        return f"{self.direction} {self.transport}: {self.start_line}"


def parse_message_log(path: Path) -> list[SipMessage]:
    """The SIP messages in a sipp ``-message_file``, in order."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    messages: list[SipMessage] = []
    for chunk in _ENTRY_SEPARATOR.split(text):
        chunk = chunk.lstrip("\n")
        head, _, body = chunk.partition("\n")
        match = _ENTRY_HEAD.match(head)
        if match is None:
            continue
        # The message follows one blank line; sipp ends each entry with blank
        # lines of its own, which are not part of the message body.
        message = body.lstrip("\n").rstrip("\n")
        if "\n\n" not in message:
            message += "\n\n"
        messages.append(
            SipMessage(
                direction=match["direction"],
                transport=match["transport"].upper(),
                text=message,
            )
        )
    return messages


def parse_stats(path: Path) -> dict[str, str]:
    """The last line of a sipp ``-stf`` statistics file, keyed by its header.

    Returns an empty dict when sipp wrote nothing (it died before its first
    dump): callers then see 0 successful calls, which fails loudly enough.
    """
    if not path.exists():
        return {}
    lines = [
        line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line
    ]
    if len(lines) < 2:
        return {}
    header = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    return {name: value.strip() for name, value in zip(header, values, strict=False)}


def stat_int(stats: Mapping[str, str], name: str) -> int:
    """A cumulative counter, e.g. ``stat_int(stats, "SuccessfulCall")``; 0 if absent."""
    value = stats.get(f"{name}(C)", stats.get(name, ""))
    try:
        return int(float(value))
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class SippResult:
    """What a finished (or stopped) sipp left behind."""

    name: str
    command: tuple[str, ...]
    returncode: int
    stats: dict[str, str]
    messages: tuple[SipMessage, ...]
    workdir: Path
    elapsed: float

    @property
    def received(self) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "received"]

    @property
    def sent(self) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "sent"]

    def stat(self, name: str) -> int:
        return stat_int(self.stats, name)

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall")

    def received_requests(self, method: str) -> list[SipMessage]:
        return [m for m in self.received if m.method == method]

    def received_responses(self, status: int) -> list[SipMessage]:
        return [m for m in self.received if m.status == status]

    def errors(self) -> str:
        path = self.workdir / "errors.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def describe(self, tail: int = 4000) -> str:
        """A readable account for assertion messages: outcome, flow, errors."""
        failures = {
            k.removesuffix("(C)"): v
            for k, v in self.stats.items()
            if k.startswith("Failed") and k.endswith("(C)") and v not in ("", "0")
        }
        flow = "\n".join(f"  {m.summary()}" for m in self.messages[:60])
        errors = self.errors()[-tail:]
        return (
            f"sipp {self.name}: exit {self.returncode}, "
            f"successful {self.successful}, failed {self.failed} {failures or ''}, "
            f"{self.elapsed:.1f}s\n"
            f"  command: {' '.join(self.command)}\n"
            f"  files: {self.workdir}\n"
            f"messages:\n{flow or '  (none)'}\n"
            f"errors.log:\n{errors or '  (empty)'}"
        )


def completed_call_ids(messages: Sequence[SipMessage]) -> set[str]:
    """The Call-IDs of the calls that ended for this sipp: a 200 received for
    a BYE it sent, or a 200 it sent for a BYE it received."""
    done: set[str] = set()
    for message in messages:
        cseq = message.header("cseq") or ""
        if message.status == 200 and cseq.upper().endswith("BYE") and message.call_id:
            done.add(message.call_id)
    return done


def expect_final_scenario(status: int, directory: Path) -> Path:
    """A caller scenario that expects its INVITE to be refused with ``status``
    (and acknowledges it), made from ``uac_expect_403.xml``; written into
    ``directory`` (the scenario path to pass as ``scenario``)."""
    template = (SCENARIOS / "uac_expect_403.xml").read_text()
    if 'response="403"' not in template:
        raise RuntimeError('uac_expect_403.xml no longer has its <recv response="403">')
    path = directory / f"uac_expect_{status}.xml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(
        template.replace('response="403"', f'response="{status}"').replace(
            'name="uac expects 403"', f'name="uac expects {status}"'
        )
    )
    return path


#: Headers that carry one side's addresses and identity through a proxy, and
#: that a B2BUA must therefore never copy from one leg to the other.
TOPOLOGY_HEADERS = ("via", "contact", "call-id", "record-route", "route")


def topology_leaks(messages: Sequence[SipMessage], forbidden: Sequence[str]) -> list[str]:
    """Every Via/Contact/Call-ID/Record-Route/Route value in ``messages``
    that contains one of the ``forbidden`` strings (addresses, Call-IDs),
    described as ``<start line>: <header>: <value>``."""
    leaks: list[str] = []
    for message in messages:
        for name, value in message.header_lines():
            if name in TOPOLOGY_HEADERS and any(f and f in value for f in forbidden):
                leaks.append(f"{message.start_line}: {name}: {value}")
    return leaks


# --------------------------------------------------------------------------- running


@dataclass(slots=True)
class SippOptions:
    """Command-line choices of one sipp run; see ``sipp -h``."""

    scenario: str | Path
    """A built-in name (``uac``, ``uas``), a file in tests/e2e/scenarios
    (``uas_503``), or a path."""
    local_ip: str
    local_port: int
    remote: str | None = None
    """``HOST:PORT`` a UAC sends to; None for a UAS."""
    transport: Transport = "udp"
    service: str | None = None
    """``-s``: the dialled user part, ``[service]`` in scenarios."""
    calls: int | None = None
    """``-m``: exit after this many calls (None: run until stopped)."""
    rate: float | None = None
    """``-r``: calls per second (per ``-rp``, 1000 ms)."""
    duration_ms: int | None = None
    """``-d``: the length of a ``<pause/>`` without its own duration."""
    timeout_s: float = 60.0
    """``-timeout``: the whole run's limit; reaching it is a failure."""
    recv_timeout_ms: int | None = 5000
    trace_messages: bool = True
    """``-trace_msg``: log every message (costly under load; off in bench)."""
    stats_period_s: int | None = None
    """``-fd``: dump statistics every N s (default: only at the end and each 60 s)."""
    keys: Mapping[str, str] = field(default_factory=dict)
    """``-key name value``: ``[name]`` in the scenario."""
    extra: Sequence[str] = ()


def scenario_args(scenario: str | Path) -> list[str]:
    if isinstance(scenario, str) and scenario in BUILTIN_SCENARIOS:
        return ["-sn", scenario]
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS / (path.name if path.suffix == ".xml" else f"{path.name}.xml")
    if not path.exists():
        raise FileNotFoundError(f"sipp scenario not found: {scenario} (looked at {path})")
    return ["-sf", str(path)]


def build_command(options: SippOptions, workdir: Path) -> list[str]:
    """The sipp command line for ``options``, writing its files into ``workdir``."""
    cmd = [sipp_binary()]
    if options.remote is not None:
        cmd.append(options.remote)
    cmd += scenario_args(options.scenario)
    cmd += ["-i", options.local_ip, "-p", str(options.local_port)]
    cmd += ["-t", _TRANSPORT_FLAG[options.transport]]
    if options.service is not None:
        cmd += ["-s", options.service]
    if options.calls is not None:
        cmd += ["-m", str(options.calls)]
    if options.rate is not None:
        cmd += ["-r", f"{options.rate:g}"]
    if options.duration_ms is not None:
        cmd += ["-d", str(options.duration_ms)]
    # -timeout_error: a run cut by the global timeout must not exit 0 just
    # because no call had failed yet.
    cmd += ["-timeout", f"{options.timeout_s:g}s", "-timeout_error"]
    if options.recv_timeout_ms is not None:
        cmd += ["-recv_timeout", str(options.recv_timeout_ms)]
    cmd += ["-nostdin", "-trace_stat", "-stf", str(workdir / "stats.csv")]
    if options.stats_period_s is not None:
        cmd += ["-fd", str(options.stats_period_s)]
    if options.trace_messages:
        cmd += ["-trace_msg", "-message_file", str(workdir / "messages.log")]
    cmd += ["-trace_err", "-error_file", str(workdir / "errors.log")]
    # Keep sipp's default behaviours (answer pings, BYE/CANCEL on abort) but
    # do not abort a call on an unexpected message: let it go on and fail on
    # its receive timeout instead, so a stray retransmission or a reordered
    # 200/487 does not end the call early; errors.log still records it.
    cmd += ["-default_behaviors", "all,-abortunexp"]
    for key, value in options.keys.items():
        cmd += ["-key", key, value]
    cmd += list(options.extra)
    return cmd


class Sipp:
    """One sipp process; start it, then :meth:`wait` for it or :meth:`stop` it."""

    def __init__(self, name: str, options: SippOptions, workdir: Path) -> None:
        self.name = name
        self.options = options
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.command = build_command(options, workdir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._result: SippResult | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Sipp:
        (self.workdir / "command.txt").write_text(" ".join(self.command) + "\n")
        with (
            open(self.workdir / "stdout.txt", "wb") as out,
            open(self.workdir / "stderr.txt", "wb") as err,
        ):
            self._proc = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                # Own process group: a Ctrl-C at the terminal reaches the test
                # runner, which then stops sipp by PID in order.
                start_new_session=True,
            )
        self._started = time.monotonic()
        return self

    def wait_until_listening(self, timeout: float = 5.0) -> None:
        """Wait until a UAS has bound its SIP port (or fail with its output).

        sipp binds within milliseconds, but a UAC sent before that gets an
        ICMP port unreachable instead of an answer.
        """
        deadline = time.monotonic() + timeout
        port = self.options.local_port
        ip = self.options.local_ip
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"sipp {self.name} exited at start:\n{self.output_tail()}")
            if port_listening(ip, port, self.options.transport):
                return
            time.sleep(0.02)
        raise TimeoutError(f"sipp {self.name} did not bind {ip}:{port}:\n{self.output_tail()}")

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to exit by itself; on timeout stop it and raise."""
        assert self._proc is not None, "not started"
        if timeout is None:
            timeout = self.options.timeout_s + 10
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(
                f"sipp {self.name} still running after {timeout:g}s:\n{self.result().describe()}"
            ) from None
        return self.result()

    def stop(self, grace: float = 5.0) -> SippResult:
        """End sipp by its PID: SIGTERM (it dumps its statistics and exits at
        once), SIGKILL if it has not exited within ``grace`` seconds."""
        if self._proc is not None:
            stop_process(self._proc, grace)
        return self.result()

    def result(self) -> SippResult:
        proc = self._proc
        assert proc is not None, "not started"
        rc = proc.poll()
        if self._result is not None and rc is not None:
            return self._result
        result = SippResult(
            name=self.name,
            command=tuple(self.command),
            returncode=rc if rc is not None else -999,
            stats=parse_stats(self.workdir / "stats.csv"),
            messages=tuple(parse_message_log(self.workdir / "messages.log")),
            workdir=self.workdir,
            elapsed=time.monotonic() - self._started,
        )
        if rc is not None:
            self._result = result
        return result

    def current_stats(self) -> dict[str, str]:
        """The latest periodic dump (with ``stats_period_s``), while it runs."""
        return parse_stats(self.workdir / "stats.csv")

    def output_tail(self, limit: int = 1500) -> str:
        parts = []
        # errors.log is already in describe(); stdout is mostly the final
        # statistics screen, whose last lines say how the run ended.
        for name in ("stderr.txt", "stdout.txt"):
            path = self.workdir / name
            if path.exists():
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {name}\n{text[-limit:]}")
        return "\n".join(parts) or "(no output)"

    def report(self) -> str:
        """Everything useful about this run, for a failed test's report."""
        if self._proc is None:
            return f"sipp {self.name}: not started"
        return f"{self.result().describe()}\n{self.output_tail()}"


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """End a process we started, by its PID: SIGTERM, then SIGKILL if it has not exited within
    ``grace`` seconds. Nothing if it has exited already."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


def port_listening(ip: str, port: int, transport: Transport) -> bool:
    """Whether a socket is bound (UDP) or listening (TCP) at ip:port.

    Read from /proc/net rather than by trying to bind the port: a probe that
    binds could take the port in the instant before sipp binds it.
    """
    packed = socket.inet_aton(ip)
    # /proc/net shows an IPv4 address as the hex of its native-endian u32.
    local = f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"
    table = Path("/proc/net/udp" if transport == "udp" else "/proc/net/tcp")
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1] == local and (transport == "udp" or fields[3] == "0A"):
            return True
    return False


def run(name: str, options: SippOptions, workdir: Path, timeout: float | None = None) -> SippResult:
    """Run a sipp to completion (a UAC, or a UAS with ``calls``)."""
    return Sipp(name, options, workdir).start().wait(timeout)


@contextlib.contextmanager
def running(name: str, options: SippOptions, workdir: Path) -> Iterator[Sipp]:
    """A sipp in the background for the duration of a ``with`` block."""
    proc = Sipp(name, options, workdir).start()
    try:
        proc.wait_until_listening()
        yield proc
    finally:
        proc.stop()

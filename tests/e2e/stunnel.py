"""sipp over TLS through stunnel: the TLS layer in front of sipp's TCP transport.

Debian's sipp (``sip-tester``) is built without TLS ("To use a TLS transport you must compile
SIPp with OpenSSL"), so the end-to-end TLS tests put Debian's ``stunnel4`` (OpenSSL, the
library sipp's ``-t l1`` would use) between sipp in TCP mode (``-t t1``) and the node:

- **client mode**, for a sipp UAC (a caller, a phone): sipp connects over TCP to the stunnel's
  ``accept`` address (sipp's ``-rsa``, while its messages still name the node's TLS address);
  stunnel opens the TLS connection to the node from ``local`` (the party's own loopback
  address), presenting the party's certificate and verifying the node's against the test CA.
- **server mode**, for a sipp UAS (a supplier): the node connects over TLS to the stunnel's
  ``accept`` address (the peer's configured address), stunnel presents the supplier's
  certificate, verifies the node's client certificate, and passes the bytes to sipp over TCP.

The node therefore sees exactly one TLS connection per party, from the party's address, with
its certificate; the SIP is sipp's. sipp writes its transport into ``[transport]`` (``TCP``):
:func:`tls_scenario` rewrites a scenario so that the Via and Contact say ``TLS`` as a TLS user
agent's would, and the assertions read the node's side (the Contact it writes names its TLS
port and ``transport=tls`` only when the request really came on a TLS connection; a binding's
source is ``tls:HOST:PORT``) and stunnel's log (the certificate each side accepted).

Each stunnel runs in the foreground in its own session, is started and stopped by its PID, and
keeps its configuration and log in its own directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .sipp import (
    BUILTIN_SCENARIOS,
    SCENARIOS,
    free_port,
    port_listening,
    sipp_binary,
    stop_process,
)

__all__ = ["Stunnel", "StunnelSpec", "stunnel_binary", "tls_scenario"]


def stunnel_binary() -> str:
    """Path of stunnel; scripts/install-system-deps.sh installs it (Debian: stunnel4)."""
    for name in ("stunnel4", "stunnel"):
        path = shutil.which(name)
        if path is not None:
            return path
    raise FileNotFoundError(
        "stunnel is not installed: run scripts/install-system-deps.sh (Debian: stunnel4)"
    )


def tls_scenario(scenario: str | Path, directory: Path) -> Path:
    """A sipp scenario with its ``[transport]`` written as ``TLS`` (Via ``SIP/2.0/TLS``,
    Contact ``;transport=TLS``): what sipp would send with ``-t l1``, for a sipp that talks TCP
    to a stunnel. ``scenario`` is a file, a name in tests/e2e/scenarios, or a scenario built
    into sipp (dumped with ``sipp -sd``). Written into ``directory``; returns its path."""
    if isinstance(scenario, Path):
        name, text = scenario.stem, scenario.read_text()
    elif scenario in BUILTIN_SCENARIOS:
        # sipp -sd prints the scenario and exits 99 ("normal exit without calls processed").
        out = subprocess.run(
            [sipp_binary(), "-sd", scenario], capture_output=True, text=True, check=False,
            timeout=10,
        )  # fmt: skip
        if "<scenario" not in out.stdout:
            raise RuntimeError(f"sipp -sd {scenario} printed no scenario: {out.stderr.strip()}")
        name, text = scenario, out.stdout
    else:
        name, text = scenario, (SCENARIOS / f"{scenario}.xml").read_text()
    if "[transport]" not in text:
        raise ValueError(f"scenario {name} never names [transport]: nothing to rewrite")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}_tls.xml"
    path.write_text(text.replace("[transport]", "TLS"))
    return path


@dataclass(frozen=True, slots=True)
class StunnelSpec:
    """One stunnel service (see ``man stunnel``)."""

    client: bool
    """True: accept TCP, connect with TLS (before a UAC); False: accept TLS, connect TCP."""
    accept: tuple[str, int]
    connect: tuple[str, int]
    cert: Path
    key: Path
    ca: Path
    """Verify the other side's chain with it (``verifyChain``): the node's certificate in
    client mode, the node's client certificate in server mode."""
    local: str | None = None
    """The source address of the connections stunnel opens (the party's own address)."""


# stunnel at "info" logs each accepted certificate, e.g.
# "Certificate accepted at depth=0: CN=node".
_ACCEPTED = re.compile(r"Certificate accepted at depth=0: (?P<subject>.+)$", re.MULTILINE)
# Each connection stunnel opens: "Service [sip] connected remote server from 127.0.0.2:41234".
_CONNECTED = re.compile(r"connected remote server from (?P<source>\S+)$", re.MULTILINE)


class Stunnel:
    """One stunnel process with one service; start it, then :meth:`stop` it by its PID."""

    def __init__(self, name: str, spec: StunnelSpec, workdir: Path) -> None:
        self.name = name
        self.spec = spec
        self.workdir = workdir
        self.config_path = workdir / "stunnel.conf"
        self.log_path = workdir / "stunnel.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def before_uac(
        cls, name: str, workdir: Path, *, local: str, node: tuple[str, int], cert: Path,
        key: Path, ca: Path,
    ) -> Stunnel:  # fmt: skip
        """Client mode for a sipp UAC on ``local``: accepts on ``local`` at a free port
        (:attr:`address`, sipp's ``-rsa``), connects to ``node`` over TLS from ``local``."""
        spec = StunnelSpec(True, (local, free_port(local)), node, cert, key, ca, local)
        return cls(name, spec, workdir)

    @classmethod
    def before_uas(
        cls, name: str, workdir: Path, *, uas: tuple[str, int], cert: Path, key: Path, ca: Path,
    ) -> Stunnel:  # fmt: skip
        """Server mode for a sipp UAS at ``uas``: accepts TLS on the UAS's address at a free
        port (:attr:`address`, the peer's address in the node's config)."""
        host = uas[0]
        spec = StunnelSpec(False, (host, free_port(host)), uas, cert, key, ca, host)
        return cls(name, spec, workdir)

    @property
    def address(self) -> str:
        """``HOST:PORT`` stunnel accepts on."""
        return f"{self.spec.accept[0]}:{self.spec.accept[1]}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def config_text(self) -> str:
        spec = self.spec
        lines = [
            # Not forked (its PID is ours to stop), logging to our file only.
            "foreground = quiet",
            "pid =",
            "syslog = no",
            f"output = {self.log_path}",
            "debug = info",
            "[sip]",
            f"client = {'yes' if spec.client else 'no'}",
            f"accept = {spec.accept[0]}:{spec.accept[1]}",
            f"connect = {spec.connect[0]}:{spec.connect[1]}",
            f"cert = {spec.cert}",
            f"key = {spec.key}",
            f"CAfile = {spec.ca}",
            "verifyChain = yes",
        ]
        if spec.client:
            lines.append(f"checkIP = {spec.connect[0]}")  # the node's certificate names its IP
        if spec.local is not None:
            lines.append(f"local = {spec.local}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 5.0) -> Stunnel:
        """Start stunnel and wait until it listens on its accept address."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        with open(self.workdir / "stderr.txt", "wb") as err:
            self._proc = subprocess.Popen(
                [stunnel_binary(), str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        host, port = self.spec.accept
        deadline = time.monotonic() + timeout
        while not port_listening(host, port, "tcp"):
            if not self.running or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stunnel {self.name} did not listen on {self.address}:\n"
                                   f"{self.report()}")  # fmt: skip
            time.sleep(0.02)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """End stunnel by its PID: SIGTERM, SIGKILL after ``grace`` seconds."""
        if self._proc is not None:
            stop_process(self._proc, grace)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def accepted_certificates(self) -> list[str]:
        """The subjects of the certificates this stunnel verified from the other side (the
        node's, as server in client mode, as client in server mode), in order."""
        return [m["subject"].strip() for m in _ACCEPTED.finditer(self.log_text())]

    def connected_from(self) -> list[str]:
        """``HOST:PORT`` of each connection this stunnel opened (to the node in client mode:
        the source the node saw; to sipp in server mode), in order."""
        return [m["source"] for m in _CONNECTED.finditer(self.log_text())]

    def report(self) -> str:
        state = "running" if self.running else f"exit {self._proc.poll() if self._proc else '-'}"
        return (
            f"stunnel {self.name} pid {self._proc.pid if self._proc else '-'} ({state}), {self.config_path}:\n"
            f"{self.config_text()}--- log\n{self.log_text()[-3000:]}"
        )

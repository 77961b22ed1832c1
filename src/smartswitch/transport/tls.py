"""SIP over TLS (RFC 3261 26.2, RFC 5630): the node's TLS contexts and their reloading.

The certificate and key are files named in the node config (``tls_cert``, ``tls_key``); the
optional ``tls_ca`` is the bundle that client certificates (mutual TLS, a peer identified by
its certificate) and the certificates of peers we connect to are verified against.

**Reloading without a restart.** :meth:`TlsContexts.reload_if_changed` compares the files'
modification times and sizes with those of the last load and, when they moved, loads the
chain into the *same* :class:`ssl.SSLContext` objects the listener and the outgoing
connections use: OpenSSL copies a context's certificate into each new connection when it
starts, so the next handshake presents the new certificate while established connections keep
theirs. A pair that does not load (a key that does not match, a file half-written) is
refused with a log line and the previous pair stays in service. The node polls every few
seconds (and on SIGHUP), so renewing a certificate is: write the files, wait.

**Who is on the other end.** A client that presents a certificate must chain to ``tls_ca``
(else the handshake fails: the certificate is refused); one that presents none is accepted
(a phone) and is then known by its digest credentials like any other source.
:func:`fingerprint` is the SHA-256 of the DER certificate, as ``AB:CD:...``: what a peer's
``tls_fingerprint`` is compared with. Without ``tls_ca`` no client certificate is asked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("smartswitch.transport.tls")

__all__ = ["TlsContexts", "TlsError", "TlsSettings", "fingerprint"]


class TlsError(ValueError):
    """The TLS files cannot be used: the message names the file and why."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert: Path
    key: Path
    ca: Path | None = None  # verify client certificates and the peers we connect to
    verify_peers: bool = True  # outgoing: refuse a peer whose certificate does not verify


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, upper-case hex pairs joined by colons (as ``openssl x509
    -fingerprint -sha256`` prints it)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class TlsContexts:
    """The server context (the TLS listener) and the client context (connections we open),
    both carrying the node's certificate, reloaded in place when the files change."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_2
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client.minimum_version = ssl.TLSVersion.TLSv1_2
        # Peers are reached by IP address (no DNS on the call path): the chain is verified,
        # the name is not.
        self.client.check_hostname = False
        if settings.ca is not None:
            try:
                self.server.load_verify_locations(cafile=str(settings.ca))
                self.client.load_verify_locations(cafile=str(settings.ca))
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(f"{settings.ca}: cannot load the CA bundle: {exc}") from None
            self.server.verify_mode = ssl.CERT_OPTIONAL
        elif settings.verify_peers:
            self.client.load_default_certs(ssl.Purpose.SERVER_AUTH)
        self.client.verify_mode = ssl.CERT_REQUIRED if settings.verify_peers else ssl.CERT_NONE
        self._stamps: tuple[tuple[int, int], tuple[int, int]] | None = None
        self.reloads = 0
        self.reload_failures = 0
        self._load()

    def _load(self) -> None:
        cert, key = self.settings.cert, self.settings.key
        try:
            stamps = (_stamp(cert), _stamp(key))
        except OSError as exc:
            raise TlsError(f"{exc.filename}: cannot read: {exc.strerror}") from None
        # Tried on a context of its own first: a pair that fails half-way (the certificate
        # taken, the key refused) must not leave the contexts in service half-changed.
        for context in (ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.server, self.client):
            try:
                context.load_cert_chain(str(cert), str(key))
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(f"{cert} / {key}: cannot load the certificate: {exc}") from None
        self._stamps = stamps

    def reload_if_changed(self) -> bool:
        """Load the certificate and key again if either file changed since the last load.
        True if a new pair is in service; a pair that does not load is logged and the
        previous one kept (tried again once the files change again)."""
        try:
            stamps = (_stamp(self.settings.cert), _stamp(self.settings.key))
        except OSError as exc:
            log.warning("TLS certificate not reloaded: %s: %s", exc.filename, exc.strerror)
            return False
        if stamps == self._stamps:
            return False
        try:
            self._load()
        except TlsError as exc:
            self._stamps = stamps  # not again until the files change again
            self.reload_failures += 1
            log.error("TLS certificate not reloaded, the previous one stays: %s", exc)
            return False
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.settings.cert)
        return True

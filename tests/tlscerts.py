"""Test certificates made at test time with the ``openssl`` command (no key is committed).

:func:`make_ca` makes a self-signed CA; :meth:`Ca.issue` a certificate for an IP address (the
subjectAltName a client checking names would want) signed by it. Each call writes fresh
files into the directory it is given.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ca", "Issued", "fingerprint_of", "make_ca"]


def _openssl(*args: str) -> str:
    out = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, check=False, timeout=30
    )
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {out.stderr.strip()}")
    return out.stdout


@dataclass(frozen=True, slots=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Ca:
    cert: Path
    key: Path

    def issue(self, directory: Path, name: str, ip: str = "127.0.0.1") -> Issued:
        """A certificate for ``ip`` (CN=``name``), valid for a day, signed by this CA."""
        directory.mkdir(parents=True, exist_ok=True)
        key = directory / f"{name}.key"
        csr = directory / f"{name}.csr"
        cert = directory / f"{name}.crt"
        ext = directory / f"{name}.ext"
        ext.write_text(f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr))
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return Issued(cert, key)


def make_ca(directory: Path, name: str = "test-ca") -> Ca:
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}.key"
    cert = directory / f"{name}.crt"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    _openssl(
        "req", "-new", "-x509", "-key", str(key), "-subj", f"/CN={name}", "-days", "1",
        "-out", str(cert),
    )  # fmt: skip
    return Ca(cert, key)


def fingerprint_of(cert: Path) -> str:
    """``AB:CD:...``, as ``openssl x509 -fingerprint -sha256`` prints it."""
    out = _openssl("x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256")
    return out.strip().rpartition("=")[2]

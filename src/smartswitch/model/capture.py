"""The call-capture settings: which calls are captured, where HEP goes, how long files stay.

They are global settings (the ``settings`` table, name -> text), written through the config
writer like every other (``admin.operations.SETTINGS`` uses the checks here) and read by the
runtime from each configuration snapshot with :func:`capture_settings`.  One place says what
each text means, for the UI, the API, provisioning and the node alike.

========================  =====================================================  ===========
setting                   text                                                   default
========================  =====================================================  ===========
capture_mode              ``off``, ``all``, or ``selected`` (the peers below)    ``off``
capture_customers         peer names, comma-separated: their calls as customer   (none)
capture_suppliers         peer names, comma-separated: their calls as supplier   (none)
capture_hep               ``HOST:PORT`` of a Homer (HEP3) collector, or empty    (none)
capture_hep_id            the HEP capture agent id, a uint32                     ``1``
capture_max_age_days      days a capture file is kept (0: no limit by age)       ``30``
capture_max_mb            MiB all capture files may take (0: no limit by size)   ``20480``
========================  =====================================================  ===========
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "CAPTURE_DEFAULTS",
    "CaptureSettings",
    "capture_settings",
    "parse_days",
    "parse_hep_address",
    "parse_hep_id",
    "parse_megabytes",
    "parse_mode",
    "parse_peer_names",
    "split_names",
]

MODES = ("off", "all", "selected")

CAPTURE_DEFAULTS: dict[str, str] = {
    "capture_mode": "off",
    "capture_customers": "",
    "capture_suppliers": "",
    "capture_hep": "",
    "capture_hep_id": "1",
    "capture_max_age_days": "30",
    "capture_max_mb": "20480",
}


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    mode: str = "off"
    customers: frozenset[str] = frozenset()  # peer names
    suppliers: frozenset[str] = frozenset()
    hep: tuple[str, int] | None = None  # the collector, or None
    hep_id: int = 1
    max_age_days: float = 30.0  # 0: no limit
    max_bytes: int = 20480 * 2**20  # 0: no limit


def parse_mode(text: str) -> str:
    value = text.strip().lower()
    if value not in MODES:
        raise ValueError(f"one of {', '.join(MODES)}, got {text!r}")
    return value


def parse_peer_names(text: str) -> str:
    """Peer names separated by commas, normalised to ``a, b`` (whether they exist is the
    writer's check, which has the database)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(set(names)) < len(names):
        raise ValueError("a peer is named twice")
    return ", ".join(names)


def split_names(text: str) -> frozenset[str]:
    return frozenset(n.strip() for n in text.split(",") if n.strip())


def parse_hep_address(text: str) -> str:
    """``HOST:PORT`` (IPv6 as ``[ADDR]:PORT``) or empty; the host must be an IP address (a
    name would be resolved on the loop)."""
    text = text.strip()
    if not text:
        return ""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"HOST:PORT of the HEP collector, or empty, got {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the HEP collector's host must be an IP address, got {host!r}") from None
    return text


def parse_hep_id(text: str) -> str:
    text = text.strip()
    if not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise ValueError(f"the HEP capture id is a whole number 0-4294967295, got {text!r}")
    return str(int(text))


def parse_days(text: str) -> str:
    text = text.strip()
    try:
        days = float(text)
    except ValueError:
        raise ValueError(f"days, a number (0: no limit), got {text!r}") from None
    if not 0 <= days <= 36500 or days != days:
        raise ValueError(f"days between 0 and 36500, got {text!r}")
    return text


def parse_megabytes(text: str) -> str:
    text = text.strip()
    if not text.isdigit() or int(text) > 2**40:
        raise ValueError(f"MiB, a whole number (0: no limit), got {text!r}")
    return str(int(text))


def capture_settings(settings: Mapping[str, str]) -> CaptureSettings:
    """The capture settings from the settings table's rows; a value that does not parse (it
    was written past the writer) counts as its default."""

    def get(name: str, parse: Callable[[str], str]) -> str:
        text = settings.get(name, CAPTURE_DEFAULTS[name])
        try:
            return parse(text)
        except ValueError:
            return CAPTURE_DEFAULTS[name]

    hep_text = get("capture_hep", parse_hep_address)
    hep: tuple[str, int] | None = None
    if hep_text:
        host, _, port = hep_text.rpartition(":")
        hep = (host.strip("[]"), int(port))
    return CaptureSettings(
        mode=get("capture_mode", parse_mode),
        customers=split_names(get("capture_customers", parse_peer_names)),
        suppliers=split_names(get("capture_suppliers", parse_peer_names)),
        hep=hep,
        hep_id=int(get("capture_hep_id", parse_hep_id)),
        max_age_days=float(get("capture_max_age_days", parse_days)),
        max_bytes=int(get("capture_max_mb", parse_megabytes)) * 2**20,
    )

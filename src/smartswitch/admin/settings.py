"""The global settings (the ``settings`` table): each one's label, help, default and check.

One table for every front door: the settings page, ``/api/v1/settings`` and the ``settings:``
section of a provisioning file all read a setting's text through its check here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from smartswitch.model import capture as cap

__all__ = ["PEER_NAME_SETTINGS", "SETTINGS", "Setting"]


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    label: str
    help: str
    default: str = ""


def _bind_address(text: str) -> str:
    text = text.strip()
    if text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"an IP address (the shared IP) or empty, got {text!r}") from None
    return text


SETTINGS: dict[str, tuple[Setting, Callable[[str], str]]] = {
    "bind_address": (
        Setting(
            "bind_address",
            "Signalling bind address",
            "Empty: each node originates calls and its registrations with suppliers from its "
            "own dedicated IP (fail-over and load balancing). The shared IP: calls and the one "
            "registration leave from the shared IP, from the node holding it (fail-over only).",
        ),
        _bind_address,
    ),
    "capture_mode": (
        Setting(
            "capture_mode",
            "Call capture",
            "off: no call is captured. all: every call. selected: the calls of the customers "
            "and suppliers named below. A captured call's SIP (both legs) goes into one pcap "
            "file, linked from its CDR and copied to every node.",
            cap.CAPTURE_DEFAULTS["capture_mode"],
        ),
        cap.parse_mode,
    ),
    "capture_customers": (
        Setting(
            "capture_customers",
            "Captured customers",
            "Peer names, comma-separated: their calls as a customer are captured (mode selected).",
        ),
        cap.parse_peer_names,
    ),
    "capture_suppliers": (
        Setting(
            "capture_suppliers",
            "Captured suppliers",
            "Peer names, comma-separated: calls sent to them are captured (mode selected).",
        ),
        cap.parse_peer_names,
    ),
    "capture_hep": (
        Setting(
            "capture_hep",
            "HEP collector",
            "IP:PORT of a Homer collector: every captured message is also sent there as HEP3 "
            "(UDP). Empty: none.",
        ),
        cap.parse_hep_address,
    ),
    "capture_hep_id": (
        Setting(
            "capture_hep_id",
            "HEP capture id",
            "The capture agent id sent with HEP (a whole number 0-4294967295).",
            cap.CAPTURE_DEFAULTS["capture_hep_id"],
        ),
        cap.parse_hep_id,
    ),
    "capture_max_age_days": (
        Setting(
            "capture_max_age_days",
            "Keep captures (days)",
            "Capture files older than this are deleted on every node (0: no limit by age).",
            cap.CAPTURE_DEFAULTS["capture_max_age_days"],
        ),
        cap.parse_days,
    ),
    "capture_max_mb": (
        Setting(
            "capture_max_mb",
            "Captures at most (MiB)",
            "When all capture files take more, the oldest are deleted (0: no limit by size).",
            cap.CAPTURE_DEFAULTS["capture_max_mb"],
        ),
        cap.parse_megabytes,
    ),
}
# Settings that name peers: each name must be a peer's.
PEER_NAME_SETTINGS = frozenset({"capture_customers", "capture_suppliers"})

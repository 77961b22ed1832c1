"""smartswitch: a distributed, carrier-grade VoIP softswitch."""

__version__ = "0.1.0"

"""Call capture: the SIP of both legs of a call, as one pcap file per call and as HEP3."""

"""End-to-end tests: a real node driven by sipp over loopback."""

"""relayq.api (filled in by its own issue)."""

"""relayq.recovery (filled in by its own issue)."""

"""relayq.operator (filled in by its own issue)."""

"""relayq.core: the job engine shared by every relayq service."""

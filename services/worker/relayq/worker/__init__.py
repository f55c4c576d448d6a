"""relayq.worker: claims jobs of one priority and runs them."""

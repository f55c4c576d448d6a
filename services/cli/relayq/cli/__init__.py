"""relayq's command line: job administration and the local stack for `make run`."""

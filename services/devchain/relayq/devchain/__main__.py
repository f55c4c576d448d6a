"""`python -m relayq.devchain`: the same as `relayq-dev devchain`."""

from __future__ import annotations

from relayq.devchain.server import main

main()

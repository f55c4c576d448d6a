"""`python -m relayq.dev`: the same as `relayq-dev`."""

from relayq.dev.main import main

main()

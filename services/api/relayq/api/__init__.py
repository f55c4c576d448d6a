"""relayq.api: the aiohttp gateway (jobs, task status, administration)."""

"""Side-by-side throughput benchmark of relayq against other Redis job queues."""

"""The token relayer: purchases (swap via a Jito bundle), the exactly-once transfer, the records."""

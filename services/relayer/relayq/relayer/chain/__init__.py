"""Clients of the chain services the relayer uses: Solana RPC, a Jito block engine, a swap API."""

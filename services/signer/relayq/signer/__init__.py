"""relayq's signer service: holds the relayer's key and signs what its policy allows."""

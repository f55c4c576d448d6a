"""A local Solana chain for `make run` and the tests: LiteSVM behind the RPC and Jito APIs."""

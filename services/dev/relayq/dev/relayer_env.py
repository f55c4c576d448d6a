"""Relayer settings for a local chain, from the manifest `relayq-dev devchain` writes.

Used by `make run` and the tests: the same variables point the services at a
real cluster, a block engine and a swap API in production.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Prices of the local treasury, in lamports per whole token.
LOCAL_PRICES = {"RLQA": 5_000_000, "RLQB": 20_000_000, "RLQC": 1_000_000}
LOCAL_WEIGHTS = {"RLQA": 50, "RLQB": 30, "RLQC": 20}


def local_baskets(manifest: dict[str, Any]) -> dict[str, Any]:
    """Two baskets over the chain's mints: `starter` (all three) and `single` (the first)."""
    tokens = [
        {
            "symbol": m["symbol"],
            "mint": m["mint"],
            "decimals": m["decimals"],
            "weight": LOCAL_WEIGHTS.get(m["symbol"], 1),
            "lamportsPerToken": LOCAL_PRICES.get(m["symbol"], 1_000_000),
        }
        for m in manifest["mints"]
    ]
    return {
        "baskets": [
            {
                "id": "starter",
                "name": "Starter basket",
                "minLamports": 1_000_000,
                "maxLamports": 100_000_000_000,
                "tokens": tokens,
            },
            {
                "id": "single",
                "name": f"{tokens[0]['symbol']} only",
                "minLamports": 1_000_000,
                "maxLamports": 100_000_000_000,
                "tokens": tokens[:1],
            },
        ]
    }


def relayer_env(manifest_path: Path, baskets: dict[str, Any] | None = None) -> dict[str, str]:
    """The `RELAYQ_*` variables that point the services at the local chain.

    Writes the baskets file next to the manifest.
    """
    manifest = json.loads(manifest_path.read_text())
    baskets_file = manifest_path.parent / "baskets.json"
    baskets_file.write_text(json.dumps(baskets or local_baskets(manifest), indent=2))
    return {
        "RELAYQ_SOLANA_RPC_URL": manifest["rpcUrl"],
        "RELAYQ_JITO_URL": manifest["jitoUrl"],
        "RELAYQ_SWAP_SOURCE": "treasury",
        "RELAYQ_RELAYER_KEYPAIR_FILE": manifest["relayer"]["keypairFile"],
        "RELAYQ_TREASURY_KEYPAIR_FILE": manifest["treasury"]["keypairFile"],
        "RELAYQ_CONTRACT_OWNER": manifest["contract"]["owner"],
        "RELAYQ_BASKETS_FILE": str(baskets_file),
    }

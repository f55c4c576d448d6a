"""What a purchase would buy now: tokens per leg, fees and how long the figures hold.

The same plan a purchase makes (the swap source's price for each leg), with
nothing signed, sent or recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from relayq.relayer.baskets import LAMPORTS_PER_SOL
from relayq.relayer.buy import basket_for, network_fee_bound
from relayq.relayer.relayer import Relayer

# How long a quote's figures are offered for; prices move, so a purchase may still differ.
QUOTE_VALID_SECONDS = 30


async def quote(relayer: Relayer, basket_id: str, lamports: int) -> dict[str, Any]:
    """The quote for `lamports` into basket `basket_id`; raises what a purchase would
    (UnknownBasket, InvalidPayload, InsufficientLiquidity, the chain's errors)."""
    basket = basket_for(relayer, basket_id, lamports)
    owner = relayer.signer.pubkey()
    legs = [
        (await relayer.swap.plan(owner, token, share)).leg
        for token, share in zip(basket.tokens, basket.split(lamports), strict=True)
    ]
    expires = datetime.now(UTC) + timedelta(seconds=QUOTE_VALID_SECONDS)
    return {
        "bundleId": basket.id,
        "solAmount": lamports / LAMPORTS_PER_SOL,
        "priceSource": relayer.swap.price_source,
        "tokens": [
            {
                "symbol": leg.token.symbol,
                "mint": str(leg.token.mint),
                "decimals": leg.token.decimals,
                "solAmount": leg.lamports / LAMPORTS_PER_SOL,
                "amount": str(leg.amount),
            }
            for leg in legs
        ],
        "fees": {
            "tipLamports": relayer.chain.tip_lamports,
            "networkFeeLamports": network_fee_bound(len(basket.tokens)),
        },
        "expiresAt": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }

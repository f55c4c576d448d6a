"""Baskets a client can buy: a set of tokens with weights, loaded from a JSON file.

```json
{"baskets": [{"id": "starter", "name": "Starter", "minLamports": 10000000,
              "maxLamports": 100000000000,
              "tokens": [{"symbol": "RLQA", "mint": "<base58>", "decimals": 6,
                          "weight": 50, "lamportsPerToken": 1000000}]}]}
```

`lamportsPerToken` (the price of one whole token) is used by the treasury swap;
a Jupiter swap prices each leg by its quote instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solders.pubkey import Pubkey

LAMPORTS_PER_SOL = 1_000_000_000
MAX_TOKENS_PER_BASKET = 8


class BasketError(ValueError):
    """The baskets file is not usable."""


@dataclass(frozen=True)
class BasketToken:
    symbol: str
    mint: Pubkey
    decimals: int
    weight: int
    lamports_per_token: int | None


@dataclass(frozen=True)
class Leg:
    """One token of a purchase: the SOL it costs and the base units it buys."""

    token: BasketToken
    lamports: int
    amount: int


@dataclass(frozen=True)
class Basket:
    id: str
    name: str
    tokens: tuple[BasketToken, ...]
    min_lamports: int
    max_lamports: int

    def split(self, lamports: int) -> list[int]:
        """The lamports each token gets, by weight; the last takes the rounding remainder."""
        total = sum(t.weight for t in self.tokens)
        shares = [lamports * t.weight // total for t in self.tokens]
        shares[-1] += lamports - sum(shares)
        return shares

    def to_public(self, price_source: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "priceSource": price_source,
            "limits": {
                "minSol": self.min_lamports / LAMPORTS_PER_SOL,
                "maxSol": self.max_lamports / LAMPORTS_PER_SOL,
            },
            "tokens": [
                {
                    "symbol": t.symbol,
                    "mint": str(t.mint),
                    "decimals": t.decimals,
                    "weight": t.weight / sum(x.weight for x in self.tokens),
                    **(
                        {"lamportsPerToken": t.lamports_per_token}
                        if t.lamports_per_token is not None
                        else {}
                    ),
                }
                for t in self.tokens
            ],
        }


def load_baskets(path: str | Path) -> dict[str, Basket]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BasketError(f"cannot read baskets file {path}: {exc}") from None
    return parse_baskets(raw)


def parse_baskets(raw: Any) -> dict[str, Basket]:
    if not isinstance(raw, dict) or not isinstance(raw.get("baskets"), list):
        raise BasketError('baskets file must be {"baskets": [...]}')
    out: dict[str, Basket] = {}
    for i, b in enumerate(raw["baskets"]):
        where = f"baskets[{i}]"
        try:
            tokens = tuple(_token(t) for t in b["tokens"])
            basket = Basket(
                id=str(b["id"]),
                name=str(b.get("name", b["id"])),
                tokens=tokens,
                min_lamports=int(b.get("minLamports", LAMPORTS_PER_SOL // 100)),
                max_lamports=int(b.get("maxLamports", 100 * LAMPORTS_PER_SOL)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BasketError(f"{where}: {exc}") from None
        if not 1 <= len(basket.tokens) <= MAX_TOKENS_PER_BASKET:
            raise BasketError(f"{where}: 1 to {MAX_TOKENS_PER_BASKET} tokens")
        if not 0 < basket.min_lamports <= basket.max_lamports:
            raise BasketError(f"{where}: need 0 < minLamports <= maxLamports")
        if basket.id in out:
            raise BasketError(f"{where}: duplicate id {basket.id!r}")
        out[basket.id] = basket
    return out


def _token(t: dict[str, Any]) -> BasketToken:
    token = BasketToken(
        symbol=str(t["symbol"]),
        mint=Pubkey.from_string(str(t["mint"])),
        decimals=int(t["decimals"]),
        weight=int(t["weight"]),
        lamports_per_token=int(t["lamportsPerToken"]) if "lamportsPerToken" in t else None,
    )
    if token.weight <= 0 or not 0 <= token.decimals <= 18:
        raise ValueError(f"token {token.symbol}: weight > 0 and decimals 0..18")
    if token.lamports_per_token is not None and token.lamports_per_token <= 0:
        raise ValueError(f"token {token.symbol}: lamportsPerToken > 0")
    return token

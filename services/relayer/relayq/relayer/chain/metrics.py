"""Prometheus metrics of the relayer and its chain calls (listed in docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHAIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SWAP_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)

CHAIN_REQUESTS = Counter(
    "relayq_chain_requests_total",
    "Calls to chain services by outcome: ok, error (answered with an error), unavailable.",
    ["service", "method", "outcome"],
)
CHAIN_REQUEST_SECONDS = Histogram(
    "relayq_chain_request_seconds",
    "Duration of one call to a chain service, retries excluded.",
    ["service", "method"],
    buckets=CHAIN_BUCKETS,
)
PURCHASES = Counter(
    "relayq_purchases_total",
    "Purchase requests by outcome: accepted (swap landed), swap_pending, failed, needs_review,"
    " limited (a purchase limit refused it), short_of_sol (the relayer could not pay).",
    ["outcome"],
)
SWAP_SECONDS = Histogram(
    "relayq_swap_seconds",
    "From sending a swap bundle to seeing it land.",
    buckets=SWAP_BUCKETS,
)
TRANSFERS = Counter(
    "relayq_transfers_total",
    "Token transfer steps by outcome: sent, resent, resigned, confirmed, failed.",
    ["outcome"],
)
SWAPS_REFUSED = Counter(
    "relayq_swaps_refused_total",
    "Swap API answers refused before signing, by the check that failed.",
    ["check"],
)
REFUNDS = Counter(
    "relayq_refunds_total",
    "Refund steps by outcome: decided, sent, resent, resigned, refunded (finalized),"
    " failed (at finalized), parked.",
    ["outcome"],
)

"""The signer's metrics (listed in docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import Counter

SIGNATURES = Counter(
    "relayq_signer_signatures_total", "Messages the signer signed, by purpose", ["purpose"]
)
REFUSALS = Counter(
    "relayq_signer_refusals_total",
    "Requests the signer refused (policy, authentication, malformed), by reason",
    ["reason"],
)

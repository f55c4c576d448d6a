"""Fault injection for tests: what a real cluster and block engine do on a bad day.

Enabled only with `--faults`; otherwise `/devchain/faults` answers 404.
`POST /devchain/faults` takes a JSON object with any of these keys; counters
*add* to what is already armed, flags and delays replace the current value:

- `dropTransactions` (int n): the next n `sendTransaction` calls (RPC or
  `/api/v1/transactions`) answer the signature but never execute it, as when
  the leader drops it: its status stays null and it can be sent again.
- `dropBundles` (int n): the next n bundles are accepted (bundle id returned)
  but never land. They stay `Pending` while the blockhash of every one of their
  transactions is valid, then become `Invalid` (the block engine has forgotten
  them); `getBundleStatuses` answers null for them throughout.
- `failBundles` (int n): the next n bundles are reported `Failed` at the next
  slot, without executing anything.
- `rpcErrors` (int n) with optional `methods` (list of method names): the next
  n JSON-RPC calls answer HTTP 503 with a JSON-RPC error (-32005 "Node is
  unhealthy"); with `rpcErrorStatus: 200` they answer HTTP 200 with the error,
  as a node that is behind does. Without `methods` only Solana RPC calls (`POST /`) count; with
  it, calls of those methods on either endpoint (Jito method names included).
- `rpcDelayMs` (int): every Solana RPC answer (`POST /`) is delayed this long.
- `haltSlots` (bool): stop (true) or resume (false) slot production. While
  halted, blockhashes do not expire and pending bundles do not land.
- `advanceSlots` (int n <= 10000): produce n slots at once (queued bundles land
  at the first), to expire blockhashes quickly. Applied immediately, not stored.
- `historyOff` (bool): answer as a node without transaction history (true) or
  with it (false): getSignatureStatuses with `searchTransactionHistory` is
  -32011, as behind a load balancer that reaches such a node.
- `statusLagSlots` (int): getSignatureStatuses answers as a node that many
  slots behind (`context.slot` and what it knows), as a load balancer may
  route one call to a lagging node; 0 turns it off.
- `reset` (bool): clear every armed fault first.

`GET /devchain/faults` shows the armed faults in the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Slots are produced on the event loop: bound one request's work.
MAX_ADVANCE = 10_000


class FaultError(ValueError):
    """A malformed fault request."""


def _count(body: dict[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaultError(f"{key} must be a non-negative integer")
    return value


@dataclass
class Faults:
    """Armed faults; every consume_* takes one from its counter."""

    drop_transactions: int = 0
    drop_bundles: int = 0
    fail_bundles: int = 0
    rpc_errors: int = 0
    rpc_error_methods: list[str] = field(default_factory=list)
    rpc_error_status: int = 503
    rpc_delay_ms: int = 0
    halt_slots: bool = False
    history_off: bool = False
    status_lag_slots: int = 0

    def apply(self, body: Any) -> int:
        """Arm the faults in a request body; returns the slots to advance now."""
        if not isinstance(body, dict):
            raise FaultError("body must be a JSON object")
        known = {"dropTransactions", "dropBundles", "failBundles", "rpcErrors", "methods",
                 "rpcErrorStatus", "rpcDelayMs", "haltSlots", "advanceSlots", "reset",
                 "historyOff", "statusLagSlots"}  # fmt: skip
        unknown = sorted(set(body) - known)
        if unknown:
            raise FaultError(f"unknown fault(s): {', '.join(unknown)}")
        methods = body.get("methods")
        if methods is not None and (
            not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)
        ):
            raise FaultError("methods must be a list of method names")
        halt = body.get("haltSlots")
        if halt is not None and not isinstance(halt, bool):
            raise FaultError("haltSlots must be a boolean")
        history_off = body.get("historyOff")
        if history_off is not None and not isinstance(history_off, bool):
            raise FaultError("historyOff must be a boolean")
        status = body.get("rpcErrorStatus", 503)
        if status not in (200, 503):
            raise FaultError("rpcErrorStatus must be 200 or 503")
        counts = {
            k: _count(body, k)
            for k in known - {"methods", "haltSlots", "reset", "rpcErrorStatus", "historyOff"}
        }
        if counts["advanceSlots"] > MAX_ADVANCE:
            raise FaultError(f"advanceSlots is at most {MAX_ADVANCE}")
        if body.get("reset"):
            self.reset()
        self.drop_transactions += counts["dropTransactions"]
        self.drop_bundles += counts["dropBundles"]
        self.fail_bundles += counts["failBundles"]
        if counts["rpcErrors"]:
            self.rpc_errors += counts["rpcErrors"]
            self.rpc_error_methods = list(methods or [])
            self.rpc_error_status = status
        if "rpcDelayMs" in body:
            self.rpc_delay_ms = counts["rpcDelayMs"]
        if halt is not None:
            self.halt_slots = halt
        if history_off is not None:
            self.history_off = history_off
        if "statusLagSlots" in body:
            self.status_lag_slots = counts["statusLagSlots"]
        return counts["advanceSlots"]

    def reset(self) -> None:
        self.__dict__.update(Faults().__dict__)

    def to_json(self) -> dict[str, Any]:
        return {
            "dropTransactions": self.drop_transactions,
            "dropBundles": self.drop_bundles,
            "failBundles": self.fail_bundles,
            "rpcErrors": self.rpc_errors,
            "methods": self.rpc_error_methods,
            "rpcErrorStatus": self.rpc_error_status,
            "rpcDelayMs": self.rpc_delay_ms,
            "haltSlots": self.halt_slots,
            "historyOff": self.history_off,
            "statusLagSlots": self.status_lag_slots,
        }

    def consume_rpc_error(self, method: str, solana_endpoint: bool) -> bool:
        if self.rpc_errors <= 0:
            return False
        if self.rpc_error_methods:
            if method not in self.rpc_error_methods:
                return False
        elif not solana_endpoint:
            return False
        self.rpc_errors -= 1
        return True

    def consume_drop_transaction(self) -> bool:
        if self.drop_transactions <= 0:
            return False
        self.drop_transactions -= 1
        return True

    def consume_drop_bundle(self) -> bool:
        if self.drop_bundles <= 0:
            return False
        self.drop_bundles -= 1
        return True

    def consume_fail_bundle(self) -> bool:
        if self.fail_bundles <= 0:
            return False
        self.fail_bundles -= 1
        return True

"""The swap verdict table: what the statuses of a swap's transactions allow, before and after
its blockhash expired at finalized (as told by a node that has seen that far)."""

from __future__ import annotations

import pytest
from solders.signature import Signature

from relayq.relayer.chain.rpc import SignatureState
from relayq.relayer.settle import Verdict, _judge

SIGS = [Signature(bytes([n]) * 64) for n in (1, 2)]


def ok(level: str) -> SignatureState:
    return SignatureState(slot=10, error=None, confirmation=level)


def bad(level: str) -> SignatureState:
    return SignatureState(slot=10, error="InstructionError", confirmation=level)


@pytest.mark.parametrize(
    ("states", "expired", "verdict"),
    [
        ([ok("confirmed"), ok("finalized")], False, Verdict.LANDED),
        ([ok("confirmed"), ok("processed")], False, Verdict.PENDING),
        # Every one landed, one not yet confirmed: waiting, never partial.
        ([ok("confirmed"), ok("processed")], True, Verdict.PENDING),
        ([ok("confirmed"), None], False, Verdict.PENDING),
        ([ok("confirmed"), None], True, Verdict.PARTIAL),
        ([ok("finalized"), bad("finalized")], True, Verdict.PARTIAL),
        ([None, None], False, Verdict.PENDING),
        ([None, None], True, Verdict.FAILED),
        # A failure seen only at confirmed is no verdict; at finalized, for all, it is.
        ([bad("confirmed"), bad("confirmed")], False, Verdict.PENDING),
        ([bad("finalized"), bad("finalized")], False, Verdict.FAILED),
        ([bad("finalized"), None], False, Verdict.PENDING),
        ([bad("finalized"), None], True, Verdict.FAILED),
    ],
)
def test_swap_verdicts(
    states: list[SignatureState | None], expired: bool, verdict: Verdict
) -> None:
    assert _judge(SIGS, states, expired=expired).verdict is verdict


def test_a_partial_verdict_names_what_landed_and_what_did_not() -> None:
    check = _judge(SIGS, [ok("finalized"), None], expired=True)
    assert check.landed == (str(SIGS[0]),) and check.missing == (str(SIGS[1]),)

"""Errors of the chain clients, split by what the caller should do about them."""

from __future__ import annotations

from typing import Any


class ChainError(Exception):
    """A chain service could not do what was asked."""


class ChainUnavailable(ChainError):
    """The service did not answer usefully (transport error, timeout, 5xx, 429): try again later."""


class ChainRejected(ChainError):
    """The service answered with an error about the request itself.

    Attributes:
        code: the JSON-RPC error code.
        data: the error's data member, when given.
    """

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class SwapRefused(ChainError):
    """A swap API's answer failed a check made before signing; nothing was signed.

    Attributes:
        check: which check refused it, one of `malformed`, `program`, `mint`,
            `amount`, `slippage`, `destination`, `authority`, `account` (a swap
            leg naming or writing an account it may not) (a metric label).
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"swap refused ({check}): {message}")
        self.check = check

"""Signing keys from solana-keygen JSON files (a JSON array of the 64 secret-key bytes)."""

from __future__ import annotations

from pathlib import Path

from solders.keypair import Keypair


def load_keypair(path: str | Path) -> Keypair:
    try:
        return Keypair.from_json(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read keypair file {path}: {exc}") from None

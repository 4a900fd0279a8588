"""Bourse objects on the wire, in Backpack's shapes (BOT_API.md). Plain functions, no rules."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from accounts.models import Asset, Balance, Deposit, Withdrawal


def amount(value: Decimal, asset: Asset) -> str:
    """A decimal string at the asset's precision: USD "100.50", AAPL "10"."""
    return f"{value.quantize(Decimal(1).scaleb(-asset.precision)):f}"


def timestamp(value: datetime) -> str:
    """ISO-8601 in UTC with milliseconds, as Backpack writes `createdAt` (plus the Z)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def balances(rows: list[Balance]) -> dict[str, dict[str, str]]:
    return {
        row.asset.symbol: {
            "available": amount(row.available, row.asset),
            "locked": amount(row.locked, row.asset),
            # Backpack's staking; Bourse has none, clients still read it.
            "staked": "0",
        }
        for row in rows
    }


def deposit(row: Deposit) -> dict[str, Any]:
    return {
        "id": row.pk,
        "symbol": row.asset.symbol,
        "quantity": amount(row.quantity, row.asset),
        "status": row.status,
        "createdAt": timestamp(row.created_at),
    }


def withdrawal(row: Withdrawal) -> dict[str, Any]:
    return {
        "id": row.pk,
        "symbol": row.asset.symbol,
        "quantity": amount(row.quantity, row.asset),
        "address": row.address,
        # CCXT's parse_transaction reads the destination from Backpack's `toAddress`.
        "toAddress": row.address,
        "status": row.status,
        "createdAt": timestamp(row.created_at),
    }

"""The ledger invariants, checked with aggregate SQL (see ARCHITECTURE.md "Who owns what").

1. Per asset: the sum of all balances (available + locked, the house account included)
   equals confirmed deposits − completed withdrawals + staff allocations. Trades and fees
   only move money between balances, so they never change this sum.
2. Each balance row equals the sum of its ledger entries, available and locked separately
   (a ledger entry without a balance row, or the reverse, counts as a mismatch).
3. No balance is negative.

Each check is ONE statement, so it reads one consistent snapshot even while the exchange
is trading; the checks never lock anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection


@dataclass(frozen=True)
class AssetTotal:
    symbol: str
    balances: Decimal
    expected: Decimal


@dataclass(frozen=True)
class Problem:
    symbol: str
    message: str


_TOTALS_SQL = """
WITH bal AS (
    SELECT asset_id, SUM(available + locked) AS total FROM accounts_balance GROUP BY asset_id
), dep AS (
    SELECT asset_id, SUM(quantity) AS total FROM accounts_deposit
    WHERE status = 'Confirmed' GROUP BY asset_id
), wd AS (
    SELECT asset_id, SUM(quantity) AS total FROM accounts_withdrawal
    WHERE status = 'Completed' GROUP BY asset_id
), alloc AS (
    SELECT asset_id, SUM(quantity) AS total FROM accounts_staffallocation GROUP BY asset_id
)
SELECT a.symbol,
       COALESCE(bal.total, 0),
       COALESCE(dep.total, 0) - COALESCE(wd.total, 0) + COALESCE(alloc.total, 0)
FROM accounts_asset a
LEFT JOIN bal ON bal.asset_id = a.id
LEFT JOIN dep ON dep.asset_id = a.id
LEFT JOIN wd ON wd.asset_id = a.id
LEFT JOIN alloc ON alloc.asset_id = a.id
ORDER BY a.symbol
"""

_ROWS_SQL = """
WITH led AS (
    SELECT user_id, asset_id, SUM(available_delta) AS available, SUM(locked_delta) AS locked
    FROM accounts_ledgerentry GROUP BY user_id, asset_id
), joined AS (
    SELECT COALESCE(b.user_id, led.user_id) AS user_id,
           COALESCE(b.asset_id, led.asset_id) AS asset_id,
           COALESCE(b.available, 0) AS available, COALESCE(b.locked, 0) AS locked,
           COALESCE(led.available, 0) AS led_available, COALESCE(led.locked, 0) AS led_locked
    FROM accounts_balance b
    FULL OUTER JOIN led ON led.user_id = b.user_id AND led.asset_id = b.asset_id
)
SELECT a.symbol, u.username, j.available, j.locked, j.led_available, j.led_locked
FROM joined j
JOIN accounts_asset a ON a.id = j.asset_id
JOIN accounts_user u ON u.id = j.user_id
WHERE j.available <> j.led_available OR j.locked <> j.led_locked
   OR j.available < 0 OR j.locked < 0
ORDER BY a.symbol, u.username
"""


def fmt_amount(value: Decimal) -> str:
    # The columns carry 16 decimals; "933.75" reads better than "933.7500000000000000".
    return format(value.normalize(), "f")


def ledger_totals() -> list[AssetTotal]:
    """Per asset (every asset, in symbol order): the sum of balances and what it should be."""
    with connection.cursor() as cursor:
        cursor.execute(_TOTALS_SQL)
        return [AssetTotal(symbol, balances, expected) for symbol, balances, expected in cursor.fetchall()]


def ledger_problems() -> tuple[list[AssetTotal], list[Problem]]:
    """Every asset's totals, and every broken invariant with the asset it concerns."""
    totals = ledger_totals()
    problems = [
        Problem(
            t.symbol,
            f"{t.symbol}: sum of balances {fmt_amount(t.balances)} != "
            f"deposits - withdrawals + allocations {fmt_amount(t.expected)}",
        )
        for t in totals
        if t.balances != t.expected
    ]
    with connection.cursor() as cursor:
        cursor.execute(_ROWS_SQL)
        for symbol, username, available, locked, led_available, led_locked in cursor.fetchall():
            if available < 0 or locked < 0:
                problems.append(
                    Problem(symbol, f"{symbol} {username}: negative balance available {fmt_amount(available)}, locked {fmt_amount(locked)}")
                )
            if available != led_available or locked != led_locked:
                problems.append(
                    Problem(
                        symbol,
                        f"{symbol} {username}: balance available {fmt_amount(available)}, locked {fmt_amount(locked)} != "
                        f"ledger entries available {fmt_amount(led_available)}, locked {fmt_amount(led_locked)}",
                    )
                )
    return totals, problems


def ledger_check() -> list[str]:
    """The mismatches, one line each naming asset, user, expected and actual; empty when OK."""
    return [problem.message for problem in ledger_problems()[1]]

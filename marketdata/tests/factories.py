"""Trades made through the real path for market-data tests.

`Tape` places orders with `order_place` (real locks), runs the REAL engine core on their
commands with the timestamps a test chooses (the engine takes time only from commands), and
applies the events with `settlement_apply`, the DB processor's transaction, which inserts
the trades and maintains the candles.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from accounts.tests.factories import fund, make_user
from engine_worker.engine import Event
from engine_worker.settlement import SettlementResult, settlement_apply
from engine_worker.tests.factories import EngineRun, batch_payload, place, place_command
from trading.models import Market

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(when: datetime) -> int:
    """An aware datetime as engine µs."""
    return (when - _EPOCH) // timedelta(microseconds=1)


class Tape:
    """Trades in the given markets at chosen times, through the engine and settlement."""

    def __init__(self, *markets: Market) -> None:
        self.run = EngineRun(*markets)
        self.buyer = make_user()
        self.seller = make_user()
        for market in markets:
            fund(self.buyer, market.quote, Decimal("100000000"))
            fund(self.seller, market.base, Decimal("1000000"))
        self.pending: list[Event] = []

    def trade(self, market: Market, when: datetime, *prices_qtys: tuple[str, str], taker: str = "Bid") -> None:
        """Resting orders at each (price, qty) on the maker side, then one taker sweeping them
        all at `when`: one trade per level, in the given order (best price first). Events are
        held until `commit`, so several calls can make one batch."""
        maker_side, maker_user = ("Ask", self.seller) if taker == "Bid" else ("Bid", self.buyer)
        taker_user = self.buyer if taker == "Bid" else self.seller
        makers = [place(maker_user, market, maker_side, price, qty) for price, qty in prices_qtys]
        worst = prices_qtys[-1][0]
        total = sum(Decimal(qty) for _, qty in prices_qtys)
        taker_order = place(taker_user, market, taker, worst, total)
        ts = us(when)
        commands: list[Any] = [dataclasses.replace(place_command(order), ts=ts) for order in (*makers, taker_order)]
        self.pending += self.run.apply(*commands)

    def commit(self) -> SettlementResult:
        events, self.pending = self.pending, []
        return settlement_apply(batches=[batch_payload(events)])

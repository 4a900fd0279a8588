"""The rolling 24-hour ticker, from the trades themselves: its edges are exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from engine_worker.tests.factories import make_market
from marketdata import selectors
from marketdata.tests.factories import Tape

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 5, 6, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
MS = timedelta(milliseconds=1)


def test_only_trades_inside_the_24_hour_window_count() -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    tape = Tape(market)
    tape.trade(market, NOW - DAY - MS, ("500.00", "7"))  # just outside
    tape.trade(market, NOW - DAY + MS, ("100.00", "1"))  # just inside: the first price
    tape.trade(market, NOW - timedelta(hours=3), ("90.00", "2"), ("95.00", "1"))
    tape.trade(market, NOW - timedelta(hours=1), ("130.00", "1"), taker="Ask")
    tape.trade(market, NOW, ("120.00", "4"))  # exactly now: the last price
    tape.trade(market, NOW + MS, ("1.00", "9"))  # after now
    tape.commit()

    row = selectors.ticker(market, NOW)

    assert (row.symbol, row.first_price, row.last_price, row.high, row.low) == (
        "AAPL_USD", D("100.00"), D("120.00"), D("130.00"), D("90.00"),
    )
    assert (row.volume, row.quote_volume, row.trades) == (D(9), D("100") + D("180") + D("95") + D("130") + D("480"), 5)
    assert row.price_change == D("20.00")
    assert row.price_change_percent == D("0.2")


def test_a_quiet_market_shows_its_last_price_with_no_volume() -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    tape = Tape(market)
    tape.trade(market, NOW - DAY - timedelta(hours=5), ("80.00", "1"))
    tape.trade(market, NOW - DAY - MS, ("81.00", "1"))
    tape.commit()

    row = selectors.ticker(market, NOW)

    assert (row.first_price, row.last_price, row.high, row.low) == (D("81.00"),) * 4
    assert (row.volume, row.quote_volume, row.trades, row.price_change, row.price_change_percent) == (
        D(0), D(0), 0, D(0), D(0),
    )


def test_tickers_cover_every_market_in_one_query(django_assert_num_queries: Any) -> None:
    aapl = make_market("AAPL", "USD", tick="0.01", lot="1")
    msft = make_market("MSFT", "USD", tick="0.01", lot="1")
    make_market("TSLA", "USD", tick="0.01", lot="1")  # never traded
    tape = Tape(aapl, msft)
    tape.trade(aapl, NOW - timedelta(hours=2), ("100.00", "1"))
    tape.trade(msft, NOW - timedelta(hours=2), ("50.00", "2"))
    tape.trade(msft, NOW - timedelta(hours=1), ("40.00", "1"), taker="Ask")
    tape.commit()

    with django_assert_num_queries(1):
        rows = selectors.tickers(NOW)

    by_symbol = {row.symbol: row for row in rows}
    assert [row.symbol for row in rows] == ["AAPL_USD", "MSFT_USD", "TSLA_USD"]
    assert (by_symbol["AAPL_USD"].last_price, by_symbol["AAPL_USD"].trades) == (D("100.00"), 1)
    msft_row = by_symbol["MSFT_USD"]
    assert (msft_row.first_price, msft_row.last_price, msft_row.volume, msft_row.trades) == (
        D("50.00"), D("40.00"), D(3), 2,
    )
    assert msft_row.price_change_percent == D("-0.2")
    tsla = by_symbol["TSLA_USD"]
    assert (tsla.last_price, tsla.volume, tsla.trades, tsla.price_change) == (None, D(0), 0, None)

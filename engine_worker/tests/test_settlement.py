"""Settlement of engine events in the database: balances to the cent, fees, releases,
order states, exactly-once application and set-based writes.

Each scenario places orders through `order_place` (real locks), runs the REAL engine core on
their commands, and applies the engine's events with `settlement_apply`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.ledger import ledger_check
from accounts.models import Balance, LedgerEntry, User
from accounts.services import house_user
from accounts.tests.factories import balance_of as bal
from accounts.tests.factories import fund
from engine_worker.engine import UpdateMarket
from engine_worker.settlement import settlement_apply, ts_datetime
from engine_worker.tests.factories import EngineRun, batch_payload, cancel_command, make_market, place
from marketdata.models import Trade
from trading import services
from trading.models import Fill, Market, MarketState, Order

pytestmark = pytest.mark.django_db

D = Decimal



def apply(payload: dict[str, Any]) -> Any:
    result = settlement_apply(batches=[payload])
    assert ledger_check() == []
    return result


@pytest.fixture
def run(market: Market) -> EngineRun:
    return EngineRun(market)


def test_cross_settles_both_sides_with_fees_and_records_the_trade(
    market: Market, buyer: User, seller: User, run: EngineRun
) -> None:
    ask = place(seller, market, "Ask", "100.00", "10")
    bid = place(buyer, market, "Bid", "100.00", "10")
    assert bal(buyer, "USD") == (D("998.00"), D("1002.00"))  # 1000.00 + 2.00 taker fee locked

    result = apply(run.batch(ask, bid))

    assert result.trades == 1 and result.gaps == {}
    assert bal(buyer, "USD") == (D("998.00"), D(0))  # paid 1000.00 + 2.00 taker fee
    assert bal(buyer, "AAPL") == (D(10), D(0))
    assert bal(seller, "USD") == (D("999.00"), D(0))  # got 1000.00 - 1.00 maker fee
    assert bal(seller, "AAPL") == (D(10), D(0))
    assert bal(house_user(), "USD") == (D("3.00"), D(0))

    trade = Trade.objects.get()
    assert (trade.trade_id, trade.price, trade.quantity, trade.quote_quantity) == (1, D("100.00"), D(10), D("1000.00"))
    assert (trade.buy_order_id, trade.sell_order_id, trade.buyer_id, trade.seller_id) == (bid.pk, ask.pk, buyer.pk, seller.pk)
    assert trade.is_buyer_maker is False
    fills = {f.order_id: f for f in Fill.objects.all()}
    assert (fills[ask.pk].fee, fills[ask.pk].is_maker, fills[ask.pk].side) == (D("1.00"), True, "Ask")
    assert (fills[bid.pk].fee, fills[bid.pk].is_maker, fills[bid.pk].side) == (D("2.00"), False, "Bid")
    assert fills[bid.pk].created_at == trade.time

    ask.refresh_from_db()
    bid.refresh_from_db()
    assert (ask.status, ask.executed_quantity, ask.executed_quote_quantity, ask.fee_paid, ask.locked) == (
        "Filled", D(10), D("1000.00"), D("1.00"), D(0),
    )
    assert (bid.status, bid.executed_quantity, bid.fee_paid, bid.locked) == ("Filled", D(10), D("2.00"), D(0))
    assert ask.accepted_seq is not None and bid.accepted_seq is not None and ask.accepted_seq < bid.accepted_seq

    state = MarketState.objects.get(market=market)
    trade_id, seq, book_update_id = run.engine.counters(market.symbol)
    assert (state.last_event_seq, state.last_trade_id, state.last_book_update_id) == (seq, trade_id, book_update_id)
    assert state.last_price == D("100.00")
    references = set(LedgerEntry.objects.filter(reason__in=["trade", "fee"]).values_list("reference", flat=True))
    assert references == {"trade:AAPL_USD:1"}


def test_fee_rates_are_those_fixed_on_each_order(market: Market, buyer: User, seller: User, run: EngineRun) -> None:
    ask = place(seller, market, "Ask", "100.00", "10")  # maker at 0.10%
    services.market_update(market_id=market.pk, maker_fee_rate=D("0.003"), taker_fee_rate=D("0.004"))
    market.refresh_from_db()
    bid = place(buyer, market, "Bid", "100.00", "10")  # taker at the new 0.40%

    apply(run.batch(ask, bid))

    assert bal(seller, "USD") == (D("999.00"), D(0))
    assert bal(buyer, "USD") == (D("996.00"), D(0))
    assert bal(house_user(), "USD") == (D("5.00"), D(0))


def test_buy_filled_at_a_better_price_gets_the_difference_back(
    market: Market, buyer: User, seller: User, run: EngineRun
) -> None:
    ask = place(seller, market, "Ask", "100.00", "10")
    bid = place(buyer, market, "Bid", "101.00", "10")
    assert bal(buyer, "USD") == (D("987.98"), D("1012.02"))

    apply(run.batch(ask, bid))

    assert bal(buyer, "USD") == (D("998.00"), D(0))  # 10.02 released
    assert LedgerEntry.objects.get(reason="order_release", reference=f"order:{bid.pk}").available_delta == D("10.02")


def test_ioc_remainder_is_released(market: Market, buyer: User, seller: User, run: EngineRun) -> None:
    ask = place(seller, market, "Ask", "100.00", "4")
    bid = place(buyer, market, "Bid", "100.00", "10", tif="IOC")

    apply(run.batch(ask, bid))

    bid.refresh_from_db()
    assert (bid.status, bid.reason, bid.executed_quantity, bid.locked) == ("Expired", "ioc", D(4), D(0))
    assert bal(buyer, "USD") == (D("1599.20"), D(0))  # 400.00 + 0.80 fee spent
    assert bal(buyer, "AAPL") == (D(4), D(0))
    assert bal(seller, "USD") == (D("399.60"), D(0))


def test_cancel_releases_the_lock(market: Market, buyer: User, run: EngineRun) -> None:
    bid = place(buyer, market, "Bid", "100.00", "10")
    apply(run.batch(bid))
    bid.refresh_from_db()
    assert (bid.status, bid.locked) == ("New", D("1002.00"))

    services.order_cancel(user=buyer, market=market, order_id=bid.pk)
    apply(run.batch(cancel_command(bid)))

    bid.refresh_from_db()
    assert (bid.status, bid.reason, bid.locked) == ("Cancelled", "user", D(0))
    assert bal(buyer, "USD") == (D("2000.00"), D(0))


def test_partial_fill_then_cancel(market: Market, buyer: User, seller: User, run: EngineRun) -> None:
    ask = place(seller, market, "Ask", "100.00", "10")
    bid = place(buyer, market, "Bid", "100.00", "3")
    apply(run.batch(ask, bid))
    ask.refresh_from_db()
    assert (ask.status, ask.executed_quantity, ask.locked) == ("PartiallyFilled", D(3), D(7))
    assert bal(seller, "AAPL") == (D(10), D(7))

    services.order_cancel(user=seller, market=market, order_id=ask.pk)
    apply(run.batch(cancel_command(ask)))

    ask.refresh_from_db()
    assert (ask.status, ask.executed_quantity, ask.locked) == ("Cancelled", D(3), D(0))
    assert bal(seller, "AAPL") == (D(17), D(0))
    assert bal(seller, "USD") == (D("299.70"), D(0))
    assert bal(buyer, "AAPL") == (D(3), D(0))
    assert bal(buyer, "USD") == (D("1699.40"), D(0))


def test_market_buy_by_quote_amount_spends_at_most_the_amount_fee_included(
    market: Market, buyer: User, seller: User, run: EngineRun
) -> None:
    asks = [place(seller, market, "Ask", "100.00", "5"), place(seller, market, "Ask", "101.00", "5")]
    buy = place(buyer, market, "Bid", None, None, quote_quantity="707.00")
    assert bal(buyer, "USD") == (D("1293.00"), D("707.00"))

    apply(run.batch(*asks, buy))

    buy.refresh_from_db()
    # Cap 707.00 / 1.002 = 705.58: 5 @ 100.00 then 2 @ 101.00 = 702.00; fees 1.00 + 0.40.
    assert (buy.status, buy.executed_quantity, buy.executed_quote_quantity, buy.fee_paid, buy.locked) == (
        "Filled", D(7), D("702.00"), D("1.40"), D(0),
    )
    assert bal(buyer, "USD") == (D("1296.60"), D(0))
    assert bal(buyer, "AAPL") == (D(7), D(0))
    assert bal(seller, "USD") == (D("701.30"), D(0))  # 702.00 - 0.50 - 0.20 maker fees
    assert bal(seller, "AAPL") == (D(10), D(3))
    assert bal(house_user(), "USD") == (D("2.10"), D(0))


def test_rejected_placement_expires_the_order_and_releases(market: Market, buyer: User) -> None:
    run = EngineRun()  # the engine does not know the market: a rejection outside every sequence
    bid = place(buyer, market, "Bid", "100.00", "10")
    payload = run.batch(bid)
    assert payload["events"][0][0] == "R" and payload["events"][0][2] == 0

    apply(payload)
    apply(payload)

    bid.refresh_from_db()
    assert (bid.status, bid.reason, bid.locked) == ("Expired", "unknown_market", D(0))
    assert bal(buyer, "USD") == (D("2000.00"), D(0))
    assert LedgerEntry.objects.filter(reason="order_release").count() == 1


def test_refused_cancel_stops_the_sweep_resending_it(market: Market, buyer: User, run: EngineRun) -> None:
    bid = place(buyer, market, "Bid", "100.00", "10")
    apply(run.batch(bid))
    services.order_cancel(user=buyer, market=market, order_id=bid.pk)
    closed = UpdateMarket(symbol=market.symbol, ts=1, status="Closed")

    apply(run.batch(closed, cancel_command(bid)))

    bid.refresh_from_db()
    assert (bid.status, bid.cancel_requested_at, bid.locked) == ("New", None, D("1002.00"))


def test_a_batch_applied_twice_changes_nothing(market: Market, buyer: User, seller: User, run: EngineRun) -> None:
    ask = place(seller, market, "Ask", "100.00", "10")
    bid = place(buyer, market, "Bid", "101.00", "6")
    payload = run.batch(ask, bid)
    first = apply(payload)
    snapshot = (
        list(Balance.objects.order_by("pk").values_list("available", "locked")),
        LedgerEntry.objects.count(), Trade.objects.count(), Fill.objects.count(),
        list(Order.objects.order_by("pk").values_list("status", "locked", "executed_quantity", "fee_paid")),
        MarketState.objects.values_list("last_event_seq", "last_trade_id", "last_book_update_id").get(),
    )

    again = apply(payload)

    assert first.applied == len(payload["events"]) and again.applied == 0
    assert again.duplicates == len(payload["events"])
    assert snapshot == (
        list(Balance.objects.order_by("pk").values_list("available", "locked")),
        LedgerEntry.objects.count(), Trade.objects.count(), Fill.objects.count(),
        list(Order.objects.order_by("pk").values_list("status", "locked", "executed_quantity", "fee_paid")),
        MarketState.objects.values_list("last_event_seq", "last_trade_id", "last_book_update_id").get(),
    )


def test_overlapping_batches_apply_only_the_new_events(market: Market, buyer: User, seller: User, run: EngineRun) -> None:
    ask = place(seller, market, "Ask", "100.00", "10")
    bid = place(buyer, market, "Bid", "100.00", "4")
    first = run.apply(ask)
    second = run.apply(bid)
    apply(batch_payload(first))

    result = apply(batch_payload(first + second))  # a re-sent batch merged with the next one

    assert result.duplicates == len(first) and result.applied == len(second)
    assert bal(seller, "USD") == (D("399.60"), D(0))


def test_gap_drops_that_market_and_keeps_the_others(buyer: User, seller: User, market: Market) -> None:
    other = make_market("MSFT", "USD")
    fund(seller, other.base, D("5"))
    run = EngineRun(market, other)
    lost = run.apply(place(seller, market, "Ask", "100.00", "1"))
    msft_ask = place(seller, other, "Ask", "50.00", "5")
    aapl_bid = place(buyer, market, "Bid", "90.00", "1")
    events = run.apply(msft_ask, aapl_bid)
    assert lost  # never delivered: AAPL_USD's next batch starts after a hole

    result = apply(batch_payload(events, epoch=3))

    assert result.gaps == {"AAPL_USD": 3}
    aapl_bid.refresh_from_db()
    msft_ask.refresh_from_db()
    assert aapl_bid.status == "Pending" and bal(buyer, "USD") == (D("1909.82"), D("90.18"))
    assert msft_ask.status == "New"
    assert MarketState.objects.get(market=other).last_event_seq == run.engine.counters("MSFT_USD")[1]
    assert MarketState.objects.get(market=market).last_event_seq == 0

    # Later batches of that epoch or older are dropped while the engine rebuilds.
    more = run.apply(place(buyer, market, "Bid", "80.00", "1"))
    dropped = settlement_apply(batches=[batch_payload(more, epoch=3)], dropped_epochs={"AAPL_USD": 3})
    assert (dropped.applied, dropped.dropped, dropped.gaps) == (0, len(more), {})


def test_queries_per_batch_do_not_grow_with_the_number_of_trades(
    market: Market, buyer: User, seller: User, run: EngineRun
) -> None:
    def queries_for_trades(count: int) -> int:
        asks = [place(seller, market, "Ask", "100.00", "1") for _ in range(count)]
        apply(run.batch(*asks))
        payload = run.batch(place(buyer, market, "Bid", "100.00", str(count)))
        with CaptureQueriesContext(connection) as queries:
            result = settlement_apply(batches=[payload])
        assert result.trades == count
        return len(queries)

    fund(seller, market.base, D("200"))
    fund(buyer, market.quote, D("20000.00"))
    small = queries_for_trades(2)
    large = queries_for_trades(200)

    # COPY of trades and fills goes through psycopg directly and is not in this count.
    assert large <= small  # the first batch also creates the missing balance rows
    assert large <= 15
    assert Trade.objects.count() == 202 and Fill.objects.count() == 404
    assert bal(house_user(), "USD") == (D("60.60"), D(0))  # 0.10 + 0.20 per 100.00 trade
    assert ledger_check() == []


def test_trade_time_is_the_engine_timestamp(market: Market, buyer: User, seller: User, run: EngineRun) -> None:
    ask = place(seller, market, "Ask", "100.00", "1")
    bid = place(buyer, market, "Bid", "100.00", "1")
    payload = run.batch(ask, bid)
    ts = next(row for row in payload["events"] if row[0] == "T")[3]

    apply(payload)

    assert Trade.objects.get().time == ts_datetime(ts)
    assert ts_datetime(1_700_000_000_123_456).isoformat() == "2023-11-14T22:13:20.123456+00:00"

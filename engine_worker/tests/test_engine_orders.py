"""Unit tests of the matching-engine core: order types, self-trade prevention,
market statuses, amends, band, counters and snapshots. Plain pytest, no Django."""

import json
from typing import Any

from engine_worker.engine import (
    ASK,
    BID,
    CANCEL_ONLY,
    CLOSED,
    FOK,
    IOC,
    LIMIT,
    LIMIT_ONLY,
    MARKET,
    POST_ONLY,
    REJECT_BOTH,
    REJECT_MAKER,
    AddMarket,
    AmendOrder,
    BestBidAsk,
    BookLevel,
    CancelAll,
    CancelOrder,
    Engine,
    Event,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderRejected,
    OrderUpdate,
    PlaceOrder,
    Trade,
    UpdateMarket,
)

SYM = "AAPL_USD"
_next_id = [1000]


def new_engine(**market: Any) -> Engine:
    eng = Engine()
    assert eng.apply(AddMarket(symbol=SYM, ts=1, **market)) == []
    return eng


def place(
    eng: Engine,
    side: str,
    price: int,
    qty: int | None,
    *,
    user: int = 1,
    oid: int | None = None,
    **kw: Any,
) -> list[Event]:
    if oid is None:
        _next_id[0] += 1
        oid = _next_id[0]
    kw.setdefault("order_type", LIMIT)
    return eng.apply(
        PlaceOrder(
            order_id=oid, user_id=user, symbol=SYM, side=side, price=price,  # type: ignore[arg-type]
            quantity=qty, ts=10, **kw,
        )
    )


def of(events: list[Event], cls: type) -> list[Any]:
    return [e for e in events if type(e) is cls]


def fills(events: list[Event]) -> list[tuple[int, int, int, int]]:
    return [(t.maker_order_id, t.taker_order_id, t.price, t.quantity) for t in of(events, Trade)]


def final(events: list[Event], oid: int) -> Any:
    """The last order-state event of ``oid`` in ``events``."""
    states = [
        e for e in events
        if type(e) in (OrderUpdate, OrderCancelled, OrderExpired) and e.order_id == oid  # type: ignore[union-attr]
    ]
    return states[-1]


def resting(eng: Engine) -> list[tuple[int, str, int, int]]:
    return [(o.order_id, o.side, o.price, o.remaining) for o in eng.open_orders(SYM)]


# ---------------------------------------------------------------- limit orders


def test_limit_order_rests_and_publishes_level_and_top() -> None:
    eng = new_engine()
    ev = place(eng, BID, 100, 5, oid=1)
    assert [type(e) for e in ev] == [OrderAccepted, BookLevel, BestBidAsk]
    assert [e.seq for e in ev] == [1, 2, 3]
    lvl = ev[1]
    assert (lvl.side, lvl.price, lvl.quantity, lvl.book_update_id) == (BID, 100, 5, 1)  # type: ignore[union-attr]
    assert ev[2] == BestBidAsk(SYM, 3, 10, 100, 5, None, 0, 1)
    # A deeper bid changes a level but not the top: no BestBidAsk.
    ev = place(eng, BID, 99, 2, oid=2)
    assert [type(e) for e in ev] == [OrderAccepted, BookLevel]
    assert eng.depth(SYM, 10) == ([(100, 5), (99, 2)], [], 2)


def test_partial_fill_then_partly_filled_maker_matched_again() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 10, oid=1, user=1)
    ev = place(eng, BID, 100, 4, oid=2, user=2)
    assert fills(ev) == [(1, 2, 100, 4)]
    assert final(ev, 1) == OrderUpdate(SYM, ev[2].seq, 10, 1, 1, "PartiallyFilled", 6, 4, 400)
    assert final(ev, 2).status == "Filled"
    ev = place(eng, BID, 101, 8, oid=3, user=3)
    assert fills(ev) == [(1, 3, 100, 6)]
    m = final(ev, 1)
    assert (m.status, m.remaining, m.executed_qty, m.executed_quote) == ("Filled", 0, 10, 1000)
    t = final(ev, 3)
    assert (t.status, t.remaining, t.executed_qty) == ("PartiallyFilled", 2, 6)
    assert resting(eng) == [(3, BID, 101, 2)]
    assert eng.depth(SYM) == ([(101, 2)], [], eng.depth(SYM)[2])


def test_price_time_priority_and_coalesced_levels() -> None:
    eng = new_engine()
    place(eng, ASK, 101, 1, oid=1, user=1)
    place(eng, ASK, 100, 1, oid=2, user=2)
    place(eng, ASK, 100, 1, oid=3, user=3)
    place(eng, ASK, 102, 1, oid=4, user=4)
    ev = place(eng, BID, 102, 3, oid=5, user=9)
    assert fills(ev) == [(2, 5, 100, 1), (3, 5, 100, 1), (1, 5, 101, 1)]
    levels = [(e.side, e.price, e.quantity) for e in of(ev, BookLevel)]
    assert levels == [(ASK, 100, 0), (ASK, 101, 0)]  # one per level, not per fill
    assert ev[-1] == BestBidAsk(SYM, ev[-1].seq, 10, None, 0, 102, 1, of(ev, BookLevel)[-1].book_update_id)
    seqs = [e.seq for e in ev]
    assert seqs == list(range(seqs[0], seqs[0] + len(ev)))
    tids = [t.trade_id for t in of(ev, Trade)]
    assert tids == [1, 2, 3]


def test_sell_taker_matches_best_bid_first() -> None:
    eng = new_engine()
    place(eng, BID, 99, 2, oid=1, user=1)
    place(eng, BID, 100, 2, oid=2, user=2)
    ev = place(eng, ASK, 99, 3, oid=3, user=3)
    assert fills(ev) == [(2, 3, 100, 2), (1, 3, 99, 1)]
    assert of(ev, Trade)[0].taker_side == ASK


# ---------------------------------------------------------------- market orders


def test_market_order_exhausts_book_and_expires_rest() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 2, oid=1, user=1)
    place(eng, ASK, 105, 3, oid=2, user=1)
    ev = place(eng, BID, 0, 10, oid=3, user=2, order_type=MARKET)
    assert fills(ev) == [(1, 3, 100, 2), (2, 3, 105, 3)]
    x = final(ev, 3)
    assert (type(x), x.reason, x.remaining, x.executed_qty, x.executed_quote) == (
        OrderExpired, "no_liquidity", 5, 5, 515,
    )
    assert resting(eng) == []
    assert not eng.open_orders(SYM)


def test_market_buy_by_quote_stops_at_cap() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 5, oid=1, user=1)
    place(eng, ASK, 101, 5, oid=2, user=1)
    ev = place(eng, BID, 0, None, oid=3, user=2, order_type=MARKET, quote_cap=700)
    # 5 lots at 100 = 500; 200 left buys 1 lot at 101 (a second would exceed the cap).
    assert fills(ev) == [(1, 3, 100, 5), (2, 3, 101, 1)]
    x = final(ev, 3)
    assert (type(x), x.status, x.remaining, x.executed_qty, x.executed_quote) == (
        OrderUpdate, "Filled", 0, 6, 601,
    )
    assert of(ev, OrderAccepted)[0].quantity is None
    assert resting(eng) == [(2, ASK, 101, 4)]


def test_market_by_quote_spending_exactly_its_cap_on_the_last_level_is_filled() -> None:
    eng = new_engine()
    place(eng, BID, 96, 3, oid=1, user=1)
    ev = place(eng, ASK, 0, None, oid=2, user=2, order_type=MARKET, quote_cap=288)
    assert fills(ev) == [(1, 2, 96, 3)]
    assert final(ev, 2).status == "Filled"
    # A sell by quote amount goes on to cheaper bids while whole lots still fit.
    place(eng, BID, 100, 1, oid=3, user=1)
    place(eng, BID, 50, 4, oid=4, user=1)
    ev = place(eng, ASK, 0, None, oid=5, user=2, order_type=MARKET, quote_cap=180)
    assert fills(ev) == [(3, 5, 100, 1), (4, 5, 50, 1)]
    assert final(ev, 5).status == "Filled"


def test_market_buy_by_quote_too_small_for_one_lot_expires() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 5, oid=1, user=1)
    ev = place(eng, BID, 0, None, oid=2, user=2, order_type=MARKET, quote_cap=99)
    assert fills(ev) == []
    assert final(ev, 2).reason == "quote_cap"


def test_market_by_quantity_with_cap_expires_at_cap() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 5, oid=1, user=1)
    ev = place(eng, BID, 0, 5, oid=2, user=2, order_type=MARKET, quote_cap=350)
    assert fills(ev) == [(1, 2, 100, 3)]
    x = final(ev, 2)
    assert (type(x), x.reason, x.remaining, x.executed_quote) == (OrderExpired, "quote_cap", 2, 300)


def test_market_order_on_empty_book_expires() -> None:
    eng = new_engine()
    ev = place(eng, ASK, 0, 3, oid=1, order_type=MARKET)
    assert [type(e) for e in ev] == [OrderAccepted, OrderExpired]
    assert ev[1].reason == "no_liquidity"  # type: ignore[union-attr]


# ---------------------------------------------------------------- IOC / FOK / post-only


def test_ioc_fills_what_it_can_and_expires_rest() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 2, oid=1, user=1)
    ev = place(eng, BID, 100, 5, oid=2, user=2, time_in_force=IOC)
    assert fills(ev) == [(1, 2, 100, 2)]
    assert (final(ev, 2).reason, final(ev, 2).remaining) == ("ioc", 3)
    assert resting(eng) == []


def test_fok_all_or_nothing() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 2, oid=1, user=1)
    place(eng, ASK, 101, 2, oid=2, user=1)
    ev = place(eng, BID, 101, 5, oid=3, user=2, time_in_force=FOK)
    assert fills(ev) == [] and final(ev, 3).reason == "fok"
    ev = place(eng, BID, 100, 3, oid=4, user=2, time_in_force=FOK)  # limit excludes 101
    assert fills(ev) == [] and final(ev, 4).reason == "fok"
    ev = place(eng, BID, 101, 4, oid=5, user=2, time_in_force=FOK)
    assert fills(ev) == [(1, 5, 100, 2), (2, 5, 101, 2)]
    assert final(ev, 5).status == "Filled"


def test_fok_failure_does_not_cancel_own_makers_under_reject_maker() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 2, oid=1, user=7)
    place(eng, ASK, 100, 2, oid=2, user=1)
    ev = place(eng, BID, 100, 3, oid=3, user=7, time_in_force=FOK,
               self_trade_prevention=REJECT_MAKER)
    assert final(ev, 3).reason == "fok"
    assert [e.order_id for e in of(ev, OrderExpired)] == [3]
    assert len(resting(eng)) == 2
    ev = place(eng, BID, 100, 2, oid=4, user=7, time_in_force=FOK,
               self_trade_prevention=REJECT_MAKER)
    assert final(ev, 1).reason == "self_trade"
    assert fills(ev) == [(2, 4, 100, 2)]


def test_post_only_expires_if_it_would_take() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 2, oid=1, user=1)
    ev = place(eng, BID, 100, 1, oid=2, user=2, post_only=True)
    assert fills(ev) == [] and final(ev, 2).reason == "post_only"
    ev = place(eng, BID, 99, 1, oid=3, user=2, post_only=True)
    assert resting(eng) == [(3, BID, 99, 1), (1, ASK, 100, 2)]


def test_invalid_orders_rejected() -> None:
    eng = new_engine()
    bad: list[dict[str, Any]] = [
        {"side": BID, "price": 0, "qty": 1},
        {"side": BID, "price": 10, "qty": 0},
        {"side": BID, "price": 10, "qty": None},
        {"side": "Up", "price": 10, "qty": 1},
        {"side": BID, "price": 10, "qty": 1, "quote_cap": 5},
        {"side": BID, "price": 10, "qty": 1, "post_only": True, "time_in_force": IOC},
        {"side": BID, "price": 0, "qty": None, "order_type": MARKET},
        {"side": BID, "price": 0, "qty": None, "order_type": MARKET, "quote_cap": 9,
         "time_in_force": FOK},
        {"side": BID, "price": 10, "qty": 1, "self_trade_prevention": "Maybe"},
    ]
    for kw in bad:
        ev = place(eng, kw.pop("side"), kw.pop("price"), kw.pop("qty"), **kw)
        assert [type(e) for e in ev] == [OrderRejected], kw
        assert ev[0].reason == "invalid"  # type: ignore[union-attr]
    assert resting(eng) == []


# ---------------------------------------------------------------- known ids


def test_repeated_order_id_is_ignored_even_after_finish_or_reject() -> None:
    eng = new_engine()
    assert place(eng, BID, 100, 1, oid=1)
    assert place(eng, BID, 100, 1, oid=1) == []
    eng.apply(CancelOrder(symbol=SYM, user_id=1, order_id=1, ts=11))
    assert place(eng, BID, 100, 1, oid=1) == []
    ev = place(eng, BID, 0, 1, oid=2)  # rejected
    assert of(ev, OrderRejected)
    assert place(eng, BID, 100, 1, oid=2) == []
    assert eng.is_known(1) and eng.is_known(2) and not eng.is_known(3)
    eng.mark_known([3])
    assert place(eng, BID, 100, 1, oid=3) == []
    assert resting(eng) == []


def test_unknown_market_rejected_outside_sequence() -> None:
    eng = new_engine()
    ev = eng.apply(PlaceOrder(order_id=1, user_id=1, symbol="NOPE", side=BID,
                              order_type=LIMIT, price=1, quantity=1, ts=1))
    assert ev == [OrderRejected("NOPE", 0, 1, 1, 1, "place", "unknown_market")]


# ---------------------------------------------------------------- cancels


def test_cancel_by_id_and_client_id_and_wrong_user() -> None:
    eng = new_engine()
    place(eng, BID, 100, 3, oid=1, user=1, client_id=77)
    place(eng, BID, 100, 2, oid=2, user=1)
    ev = eng.apply(CancelOrder(symbol=SYM, user_id=2, order_id=1, ts=11))
    assert ev[0].reason == "unknown_order"  # type: ignore[union-attr]
    ev = eng.apply(CancelOrder(symbol=SYM, user_id=1, client_id=77, ts=11))
    c = ev[0]
    assert (type(c), c.order_id, c.remaining, c.reason) == (OrderCancelled, 1, 3, "user")  # type: ignore[union-attr]
    assert of(ev, BookLevel)[0].quantity == 2
    assert of(ev, BestBidAsk)[0].bid_qty == 2
    ev = eng.apply(CancelOrder(symbol=SYM, user_id=1, order_id=1, ts=11))
    assert ev[0].reason == "unknown_order"  # type: ignore[union-attr]
    ev = eng.apply(CancelOrder(symbol=SYM, user_id=1, order_id=2, ts=11))
    assert of(ev, BookLevel)[0].quantity == 0
    assert of(ev, BestBidAsk)[0] .bid_price is None


def test_cancel_all_in_one_market_and_everywhere() -> None:
    eng = new_engine()
    eng.apply(AddMarket(symbol="B_USD", ts=1))
    place(eng, BID, 100, 1, oid=3, user=1)
    place(eng, ASK, 110, 1, oid=1, user=1)
    place(eng, BID, 99, 1, oid=2, user=2)
    eng.apply(PlaceOrder(order_id=4, user_id=1, symbol="B_USD", side=BID, order_type=LIMIT,
                         price=5, quantity=1, ts=1))
    ev = eng.apply(CancelAll(user_id=1, symbol=SYM, ts=12))
    assert [e.order_id for e in of(ev, OrderCancelled)] == [1, 3]
    assert eng.open_orders("B_USD")
    ev = eng.apply(CancelAll(user_id=1, ts=12))
    assert [(e.symbol, e.order_id) for e in of(ev, OrderCancelled)] == [("B_USD", 4)]
    assert resting(eng) == [(2, BID, 99, 1)]


# ---------------------------------------------------------------- amend


def test_amend_quantity_decrease_keeps_priority() -> None:
    eng = new_engine()
    place(eng, BID, 100, 5, oid=1, user=1)
    place(eng, BID, 100, 5, oid=2, user=2)
    ev = eng.apply(AmendOrder(symbol=SYM, user_id=1, order_id=1, new_quantity=3, ts=12))
    assert ev[0] == OrderAmended(SYM, ev[0].seq, 12, 1, 1, 100, 3, 3, False)
    assert of(ev, BookLevel)[0].quantity == 8
    assert [o[0] for o in resting(eng)] == [1, 2]
    ev = place(eng, ASK, 100, 4, oid=3, user=3)
    assert fills(ev) == [(1, 3, 100, 3), (2, 3, 100, 1)]


def test_amend_increase_or_reprice_requeues() -> None:
    eng = new_engine()
    place(eng, BID, 100, 5, oid=1, user=1)
    place(eng, BID, 100, 5, oid=2, user=2)
    ev = eng.apply(AmendOrder(symbol=SYM, user_id=1, order_id=1, new_quantity=6, ts=12))
    assert of(ev, OrderAmended)[0].requeued is True
    assert [o[0] for o in resting(eng)] == [2, 1]
    ev = eng.apply(AmendOrder(symbol=SYM, user_id=2, order_id=2, new_price=99, ts=12))
    assert [o[:3] for o in resting(eng)] == [(1, BID, 100), (2, BID, 99)]
    levels = {(e.price, e.quantity) for e in of(ev, BookLevel)}
    assert levels == {(100, 6), (99, 5)}


def test_amend_that_crosses_trades_like_a_new_placement() -> None:
    eng = new_engine()
    place(eng, ASK, 101, 2, oid=1, user=1)
    place(eng, BID, 100, 5, oid=2, user=2)
    ev = eng.apply(AmendOrder(symbol=SYM, user_id=2, order_id=2, new_price=101, ts=12))
    assert fills(ev) == [(1, 2, 101, 2)]
    t = final(ev, 2)
    assert (t.status, t.remaining, t.executed_qty) == ("PartiallyFilled", 3, 2)
    assert resting(eng) == [(2, BID, 101, 3)]
    # Total quantity semantics: new remaining = 4 - 2 executed.
    ev = eng.apply(AmendOrder(symbol=SYM, user_id=2, order_id=2, new_quantity=4, ts=13))
    assert resting(eng) == [(2, BID, 101, 2)]
    ev = eng.apply(AmendOrder(symbol=SYM, user_id=2, order_id=2, new_quantity=2, ts=14))
    c = of(ev, OrderCancelled)[0]
    assert (c.reason, c.executed_qty) == ("amend", 2)
    assert resting(eng) == []


def test_amend_rejections() -> None:
    eng = new_engine()
    place(eng, ASK, 101, 2, oid=1, user=1)
    place(eng, BID, 100, 5, oid=2, user=2, post_only=True)
    amend = lambda **kw: eng.apply(AmendOrder(symbol=SYM, order_id=2, ts=12, **kw))  # noqa: E731
    assert amend(user_id=2, new_quantity=5)[0].reason == "no_change"  # type: ignore[union-attr]
    assert amend(user_id=3, new_quantity=4)[0].reason == "unknown_order"  # type: ignore[union-attr]
    assert amend(user_id=2, new_price=0)[0].reason == "invalid"  # type: ignore[union-attr]
    assert amend(user_id=2, new_price=101)[0].reason == "post_only"  # type: ignore[union-attr]
    assert resting(eng) == [(2, BID, 100, 5), (1, ASK, 101, 2)]


# ---------------------------------------------------------------- self-trade prevention


def test_stp_reject_taker() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 1, oid=1, user=2)
    place(eng, ASK, 100, 1, oid=2, user=1)
    place(eng, ASK, 100, 1, oid=3, user=2)
    ev = place(eng, BID, 100, 3, oid=4, user=1)
    assert fills(ev) == [(1, 4, 100, 1)]
    x = final(ev, 4)
    assert (x.reason, x.remaining, x.executed_qty) == ("self_trade", 2, 1)
    assert [o[0] for o in resting(eng)] == [2, 3]


def test_stp_reject_maker() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 1, oid=1, user=1)
    place(eng, ASK, 100, 1, oid=2, user=2)
    ev = place(eng, BID, 100, 3, oid=3, user=1, self_trade_prevention=REJECT_MAKER)
    assert final(ev, 1).reason == "self_trade" and type(final(ev, 1)) is OrderExpired
    assert fills(ev) == [(2, 3, 100, 1)]
    assert resting(eng) == [(3, BID, 100, 2)]


def test_stp_reject_both() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 1, oid=1, user=2)
    place(eng, ASK, 100, 1, oid=2, user=1)
    place(eng, ASK, 100, 1, oid=3, user=2)
    ev = place(eng, BID, 100, 3, oid=4, user=1, self_trade_prevention=REJECT_BOTH)
    assert fills(ev) == [(1, 4, 100, 1)]
    assert final(ev, 2).reason == "self_trade"
    assert final(ev, 4).reason == "self_trade"
    assert [o[0] for o in resting(eng)] == [3]


# ---------------------------------------------------------------- market statuses


def test_market_statuses() -> None:
    eng = new_engine()
    place(eng, ASK, 100, 5, oid=1, user=1)

    def status(s: str) -> None:
        eng.apply(UpdateMarket(symbol=SYM, status=s, ts=2))  # type: ignore[arg-type]

    status(LIMIT_ONLY)
    assert place(eng, BID, 0, 1, order_type=MARKET)[0].reason == "market_limit_only"  # type: ignore[union-attr]
    assert fills(place(eng, BID, 100, 1, user=2))
    status(POST_ONLY)
    assert place(eng, BID, 99, 1, user=2)[0].reason == "market_post_only"  # type: ignore[union-attr]
    assert type(place(eng, BID, 99, 1, user=2, post_only=True)[0]) is OrderAccepted
    status(CANCEL_ONLY)
    assert place(eng, BID, 98, 1, user=2, post_only=True)[0].reason == "market_cancel_only"  # type: ignore[union-attr]
    r = eng.apply(AmendOrder(symbol=SYM, user_id=1, order_id=1, new_price=105, ts=3))
    assert r[0].reason == "market_cancel_only"  # type: ignore[union-attr]
    r = eng.apply(AmendOrder(symbol=SYM, user_id=1, order_id=1, new_quantity=3, ts=3))
    assert type(r[0]) is OrderAmended  # a decrease only removes liquidity: allowed
    status(CLOSED)
    before = eng.state_hash()
    assert place(eng, BID, 98, 1)[0].reason == "market_closed"  # type: ignore[union-attr]
    r = eng.apply(CancelOrder(symbol=SYM, user_id=1, order_id=1, ts=3))
    assert r[0].reason == "market_closed"  # type: ignore[union-attr]
    assert eng.apply(CancelAll(user_id=1, ts=3)) == []
    assert eng.open_orders(SYM)  # book kept
    # Only sequence numbers moved (one per rejection).
    assert eng.snapshot()["markets"][0]["bids"] == json.loads(json.dumps(eng.snapshot()))["markets"][0]["bids"]
    assert before != eng.state_hash()
    status(CANCEL_ONLY)
    r = eng.apply(CancelOrder(symbol=SYM, user_id=1, order_id=1, ts=3))
    assert type(r[0]) is OrderCancelled


def test_add_market_twice_is_ignored() -> None:
    eng = new_engine(band_bps=100)
    assert eng.apply(AddMarket(symbol=SYM, ts=2, status=CLOSED)) == []
    assert eng.snapshot()["markets"][0]["status"] == "Open"


# ---------------------------------------------------------------- price band


def test_band_stops_taker_and_uses_staff_reference_before_first_trade() -> None:
    eng = new_engine(band_bps=500, reference_price=100)  # +-5%
    place(eng, ASK, 104, 1, oid=1, user=1)
    place(eng, ASK, 105, 1, oid=2, user=1)
    place(eng, ASK, 106, 1, oid=3, user=1)
    ev = place(eng, BID, 110, 3, oid=4, user=2)
    # The reference stays 100 for the whole command even after trading at 104/105.
    assert fills(ev) == [(1, 4, 104, 1), (2, 4, 105, 1)]
    x = final(ev, 4)
    assert (type(x), x.reason, x.remaining) == (OrderExpired, "price_band", 1)
    # Next command: reference is the last trade (105): 106 is within 5%.
    ev = place(eng, BID, 110, 1, oid=5, user=2)
    assert fills(ev) == [(3, 5, 106, 1)]


def test_band_blocks_first_fill_and_staff_can_reanchor() -> None:
    eng = new_engine(band_bps=100, reference_price=1000)
    place(eng, ASK, 1020, 2, oid=1, user=1)
    ev = place(eng, BID, 1020, 1, oid=2, user=2, order_type=MARKET)
    assert fills(ev) == [] and final(ev, 2).reason == "price_band"
    ev = place(eng, BID, 1020, 1, oid=3, user=2, time_in_force=FOK)
    assert final(ev, 3).reason == "fok"
    eng.apply(UpdateMarket(symbol=SYM, reference_price=1015, ts=3))
    assert fills(place(eng, BID, 1020, 1, oid=4, user=2)) == [(1, 4, 1020, 1)]
    eng.apply(UpdateMarket(symbol=SYM, band_bps=0, ts=3))
    place(eng, ASK, 5000, 1, oid=5, user=1)
    assert fills(place(eng, BID, 0, 2, oid=6, user=2, order_type=MARKET)) == [
        (1, 6, 1020, 1), (5, 6, 5000, 1),
    ]


# ---------------------------------------------------------------- snapshot, counters, rebuild


def test_counters_continue_after_restore_and_rebuild() -> None:
    eng = new_engine(trade_id=41, event_seq=1000, book_update_id=500)
    place(eng, ASK, 100, 5, oid=1, user=1, client_id=5)
    ev = place(eng, BID, 100, 1, oid=2, user=2)
    assert of(ev, Trade)[0].trade_id == 42
    assert ev[0].seq > 1000
    snap = json.loads(json.dumps(eng.snapshot()))
    other = Engine.restore(snap)
    assert other.state_hash() == eng.state_hash()
    assert other.counters(SYM) == eng.counters(SYM)
    a = place(eng, BID, 100, 1, oid=3, user=2)
    b = place(other, BID, 100, 1, oid=3, user=2)
    assert a == b and of(a, Trade)[0].trade_id == 43
    assert place(other, BID, 100, 1, oid=2) == []  # known ids survive
    c = other.apply(CancelOrder(symbol=SYM, user_id=1, client_id=5, ts=20))
    assert type(c[0]) is OrderCancelled  # client ids survive


def test_load_resting_rebuilds_priority_without_events() -> None:
    eng = new_engine()
    eng.set_counters(SYM, trade_id=9, event_seq=90, book_update_id=70)
    eng.load_resting(SYM, order_id=5, user_id=1, side=ASK, price=100, quantity=4, executed_qty=1,
                     executed_quote=100)
    eng.load_resting(SYM, order_id=3, user_id=2, side=ASK, price=100, quantity=2)
    eng.load_resting(SYM, order_id=4, user_id=2, side=BID, price=99, quantity=2)
    assert eng.counters(SYM) == (9, 90, 70)
    assert resting(eng) == [(4, BID, 99, 2), (5, ASK, 100, 3), (3, ASK, 100, 2)]
    assert eng.is_known(5)
    ev = place(eng, BID, 100, 4, oid=6, user=3)
    assert fills(ev) == [(5, 6, 100, 3), (3, 6, 100, 1)]
    assert ev[0].seq == 91 and of(ev, Trade)[0].trade_id == 10
    assert of(ev, BookLevel)[0].book_update_id == 71
    assert final(ev, 5).executed_qty == 4
    import pytest

    with pytest.raises(ValueError):
        eng.load_resting(SYM, order_id=8, user_id=1, side=BID, price=100, quantity=1)


def test_apply_batch_equals_applying_one_by_one() -> None:
    cmds = [
        PlaceOrder(order_id=i, user_id=i % 3, symbol=SYM, side=BID if i % 2 else ASK,
                   order_type=LIMIT, price=100 + (i % 5) - 2, quantity=1 + i % 4, ts=i)
        for i in range(1, 60)
    ] + [CancelOrder(symbol=SYM, user_id=1, order_id=i, ts=100) for i in range(1, 60, 3)]
    a, b = new_engine(), new_engine()
    one_by_one = [e for c in cmds for e in a.apply(c)]
    assert b.apply_batch(cmds) == one_by_one
    assert a.state_hash() == b.state_hash()
    assert len(a.depth(SYM, 1)[0]) <= 1

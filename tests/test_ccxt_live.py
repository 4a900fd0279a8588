"""CCXT's `backpack` class trading against a live Bourse server with the pipeline running.

BOT_API.md promises that existing clients trade against Bourse with no code change: this
drives CCXT 4.5.90's unified methods (not its raw endpoint calls) over real HTTP to
pytest-django's live server, with the engine and DB processor as processes, so an order
placed through CCXT is matched, settled and read back the way a bot would see it.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from accounts.ledger import ledger_check
from accounts.models import Balance, User
from accounts.tests.api_helpers import ccxt_backpack, register_key
from accounts.tests.factories import fund, make_user
from tests.pipeline import Pipeline, wait_until
from trading.models import Order
from trading.services import OrderParams, order_place
from trading.tests.factories import make_market

pytestmark = pytest.mark.django_db(transaction=True)

SYMBOL = "AAPL/USD"


@pytest.fixture
def pipeline(tmp_path: Path, redis_conn: Any) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path)
    yield p.start()
    p.stop()


def _usd(user: User) -> tuple[Decimal, Decimal]:
    row = Balance.objects.get(user=user, asset__symbol="USD")
    return row.available, row.locked


def test_ccxt_places_cancels_and_trades(live_server: Any, pipeline: Pipeline) -> None:
    market = make_market("AAPL", "USD", min_quantity=Decimal("1"), min_notional=Decimal("1.00"))
    bot_user, seller = make_user("ccxt-bot"), make_user("seller")
    fund(bot_user, market.quote, Decimal("10000.00"))
    fund(seller, market.base, Decimal("50"))
    exchange = ccxt_backpack(register_key(bot_user), base_url=live_server.url)

    markets = exchange.load_markets()
    aapl = markets[SYMBOL]
    assert (aapl["id"], aapl["base"], aapl["quote"], aapl["spot"], aapl["active"]) == ("AAPL_USD", "AAPL", "USD", True, True)
    assert (aapl["precision"]["price"], aapl["precision"]["amount"], aapl["limits"]["amount"]["min"]) == (0.01, 1.0, 1.0)

    balance = exchange.fetch_balance()
    assert (balance["USD"]["free"], balance["USD"]["used"], balance["USD"]["total"]) == (10000.0, 0.0, 10000.0)

    # A resting bid: open at once (an acknowledged order is in the database), then cancelled.
    placed = exchange.create_order(SYMBOL, "limit", "buy", 2, 100)
    assert (placed["symbol"], placed["side"], placed["type"], placed["amount"], placed["price"]) == (SYMBOL, "buy", "limit", 2.0, 100.0)
    assert placed["status"] == "open"
    open_orders = exchange.fetch_open_orders(SYMBOL)
    assert [(o["id"], o["amount"], o["price"], o["status"]) for o in open_orders] == [(placed["id"], 2.0, 100.0, "open")]
    assert exchange.fetch_balance()["USD"]["used"] == 200.40  # 200.00 + taker fee 0.40 locked
    wait_until(lambda: Order.objects.get(pk=placed["id"]).status == Order.Status.NEW, message=f"engine accepts\n{pipeline.logs()}")

    exchange.cancel_order(placed["id"], SYMBOL)
    wait_until(lambda: not exchange.fetch_open_orders(SYMBOL), message=f"the cancel to land\n{pipeline.logs()}")
    wait_until(lambda: _usd(bot_user) == (Decimal("10000.00"), 0), message="the lock released")
    assert Order.objects.get(pk=placed["id"]).status == Order.Status.CANCELLED

    # Another user's ask rests (maker); CCXT's higher bid takes it at the ask's price.
    ask = order_place(user=seller, market=market, params=OrderParams(side="Ask", order_type="Limit", price=Decimal("101.00"), quantity=Decimal("2")))
    wait_until(lambda: Order.objects.get(pk=ask.pk).status == Order.Status.NEW, message=f"the ask rests\n{pipeline.logs()}")
    taker = exchange.create_order(SYMBOL, "limit", "buy", 2, 102)
    trades = wait_until(lambda: exchange.fetch_my_trades(SYMBOL), message=f"the fill\n{pipeline.logs()}")

    assert len(trades) == 1
    trade = trades[0]
    assert (trade["order"], trade["symbol"], trade["side"], trade["takerOrMaker"]) == (taker["id"], SYMBOL, "buy", "taker")
    assert (trade["price"], trade["amount"], trade["cost"]) == (101.0, 2.0, 202.0)
    # Taker 0.20 % of 202.00 = 0.404, rounded down to the cent.
    assert (trade["fee"]["cost"], trade["fee"]["currency"]) == (0.40, "USD")
    assert trade["timestamp"] is not None and abs(trade["timestamp"] - exchange.milliseconds()) < 60_000

    order = wait_until(
        lambda: (o := exchange.fetch_order(taker["id"], SYMBOL))["status"] == "closed" and o,
        message=f"the order closed\n{pipeline.logs()}",
    )
    assert (order["filled"], order["remaining"], order["cost"]) == (2.0, 0.0, 202.0)
    assert exchange.fetch_open_orders(SYMBOL) == []
    balance = exchange.fetch_balance()
    assert (balance["USD"]["free"], balance["USD"]["used"], balance["AAPL"]["free"]) == (9797.60, 0.0, 2.0)
    assert ledger_check() == []

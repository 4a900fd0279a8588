"""The market maker against a real test server (no engine): what it quotes, how it cancels,
what it cannot afford, and how it lives through a server that is down or refuses it."""

from __future__ import annotations

import io
import os
import signal
import socket
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from accounts import services as account_services
from accounts.models import Asset, Balance, IdempotencyRecord, User
from accounts.tests.factories import fund, make_user
from trading.market_maker import HttpApi, MarketMaker
from trading.models import Market, Order
from trading.tests.factories import make_market

pytestmark = pytest.mark.django_db(transaction=True)

REFERENCE = Decimal("190.00")


@pytest.fixture
def maker(usd: Asset, aapl: Asset) -> User:
    return make_user("marketmaker")


def _bot(url: str, user: User, **kw: Any) -> MarketMaker:
    kw.setdefault("reference_prices", lambda: {"AAPL_USD": REFERENCE})
    kw.setdefault("seed", 7)
    return MarketMaker(HttpApi(url, account_services.api_token_create(user=user), timeout=2.0), **kw)


def _open(user: User) -> list[Order]:
    return list(Order.objects.filter(user=user, status__in=Order.OPEN_STATUSES).order_by("pk"))


def _balance(user: User, asset: Asset) -> Balance:
    return Balance.objects.get(user=user, asset=asset)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_one_cycle_places_a_funded_ladder_on_tick(
    live_server: Any, market: Market, maker: User, usd: Asset, aapl: Asset
) -> None:
    fund(maker, usd, "100000.00")
    fund(maker, aapl, "1000")

    result = _bot(live_server.url, maker).cycle()

    orders = _open(maker)
    assert len(orders) == 10 and not result.rejected["AAPL_USD"]
    assert {o.status for o in orders} == {Order.Status.PENDING}
    bids = sorted((o for o in orders if o.side == Order.Side.BID), key=lambda o: -o.price)
    asks = sorted((o for o in orders if o.side == Order.Side.ASK), key=lambda o: o.price)
    assert len(bids) == len(asks) == 5
    prices = [o.price for o in orders]
    assert all(p % Decimal("0.01") == 0 for p in prices) and len(set(prices)) == 10
    # Not crossed, around the reference, 20 bps apart at the touch.
    assert bids[0].price < REFERENCE < asks[0].price
    assert asks[0].price - bids[0].price == Decimal("0.38")
    assert [o.quantity for o in bids] == [o.quantity for o in asks] == [1, 2, 3, 4, 5]
    # The funds are locked: each bid's notional plus fee in USD, each ask's shares in AAPL.
    assert _balance(maker, usd).locked == sum(o.locked for o in bids) > sum(o.price * o.quantity for o in bids)
    assert _balance(maker, aapl).locked == 15
    assert _balance(maker, aapl).available == 985


def test_next_cycle_cancels_the_old_ladder_and_places_a_new_one(
    live_server: Any, market: Market, maker: User, usd: Asset, aapl: Asset
) -> None:
    fund(maker, usd, "100000.00")
    fund(maker, aapl, "1000")
    bot = _bot(live_server.url, maker)

    first = bot.cycle()
    old = {o.pk for o in _open(maker)}
    second = bot.cycle()

    assert second.cancelled == {"AAPL_USD": 10}
    rows = Order.objects.filter(user=maker)
    assert all(o.cancel_requested_at is not None for o in rows.filter(pk__in=old))
    new = rows.exclude(pk__in=old)
    assert new.count() == 10 and all(o.cancel_requested_at is None for o in new)
    assert first.idempotency_keys["AAPL_USD"] != second.idempotency_keys["AAPL_USD"]
    assert set(IdempotencyRecord.objects.filter(user=maker).values_list("key", flat=True)) == {
        first.idempotency_keys["AAPL_USD"],
        second.idempotency_keys["AAPL_USD"],
    }

    # Without an engine both old ladders stay open, cancel requested; only the newest is live.
    third = bot.cycle()
    assert "AAPL_USD" in third.cancelled
    assert rows.count() == 30 and rows.filter(cancel_requested_at__isnull=True).count() == 10


def test_quotes_only_what_the_balance_can_fund(
    live_server: Any, market: Market, maker: User, usd: Asset, aapl: Asset
) -> None:
    fund(maker, aapl, "15")

    result = _bot(live_server.url, maker).cycle()

    assert {o.side for o in _open(maker)} == {Order.Side.ASK}
    assert len(result.placed["AAPL_USD"]) == 5 and not result.rejected["AAPL_USD"]

    # 600 USD pays for the first two bid levels (1 @ 189.81, 2 @ 189.62) and no more;
    # the 15 shares are all locked in the asks above (until the engine cancels them): no asks.
    fund(maker, usd, "600.00")
    result = _bot(live_server.url, maker).cycle()
    placed = result.placed["AAPL_USD"]
    assert [(o["side"], o["quantity"]) for o in placed] == [("Bid", "1"), ("Bid", "2")]
    assert not result.rejected["AAPL_USD"]
    assert Decimal("0") <= _balance(maker, usd).available < Decimal("600.00")


def test_survives_a_server_that_is_down_or_refuses_it(
    live_server: Any, market: Market, maker: User, usd: Asset, aapl: Asset
) -> None:
    fund(maker, usd, "100000.00")
    fund(maker, aapl, "1000")

    # Nothing listens yet (the web server is starting): capped exponential backoff, no raise.
    bot = _bot(f"http://127.0.0.1:{_closed_port()}", maker, backoff_initial=0.01, backoff_max=0.04)
    bot.run(max_cycles=5)
    assert bot.backoff_delays == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert _open(maker) == []

    # The server comes up: the same bot quotes on its next cycle.
    bot.api.base_url = live_server.url
    bot.run(max_cycles=1)
    assert len(_open(maker)) == 10

    # A revoked token: every call is refused with 401; the bot backs off, does not raise.
    account_services.api_token_revoke(user=maker)
    bot.run(max_cycles=2)
    assert bot.backoff_delays[-2:] == [0.01, 0.02]
    assert len(_open(maker)) == 10


def test_halted_market_is_skipped_and_the_others_quoted(
    live_server: Any, market: Market, maker: User, usd: Asset, aapl: Asset
) -> None:
    """A market halted between the markets list and the batch: its orders are refused, the cycle goes on."""
    msft = make_market("MSFT", "USD")
    fund(maker, usd, "100000.00")
    fund(maker, aapl, "1000")
    fund(maker, msft.base, "1000")
    bot = _bot(live_server.url, maker, reference_prices=lambda: {"AAPL_USD": REFERENCE, "MSFT_USD": Decimal("420")})
    bot.setup()
    Market.objects.filter(pk=market.pk).update(status=Market.Status.CANCEL_ONLY)

    result = bot.cycle()

    assert {o["code"] for o in result.rejected["AAPL_USD"]} == {"TRADING_PAUSED"}
    assert {o.market.symbol for o in _open(maker)} == {"MSFT_USD"}
    bot.run(max_cycles=1)  # reloads the markets after the refusal: only Open ones are quoted
    assert set(bot.markets) == {"MSFT_USD"}
    assert {o.market.symbol for o in _open(maker)} == {"MSFT_USD"}


def test_bootstrap_makes_demo_markets_and_a_funded_market_maker_once(settings: Any) -> None:
    settings.BOURSE_DEMO = True
    call_command("bootstrap_exchange", stdout=io.StringIO())
    call_command("bootstrap_exchange", stdout=io.StringIO())

    markets = {m.symbol: m for m in Market.objects.all()}
    assert set(markets) == {"AAPL_USD", "MSFT_USD", "TSLA_USD"}
    aapl = markets["AAPL_USD"]
    assert (aapl.tick_size, aapl.lot_size, aapl.min_notional, aapl.band_bps, aapl.reference_price) == (
        Decimal("0.01"), 1, Decimal("1.00"), 1000, Decimal("190.00"),
    )  # fmt: skip
    maker = User.objects.get(username="marketmaker")
    assert not maker.has_usable_password()
    held = {b.asset.symbol: b.available for b in Balance.objects.filter(user=maker).select_related("asset")}
    assert held == {"USD": Decimal("10000000"), "AAPL": 10000, "MSFT": 10000, "TSLA": 10000}
    call_command("check_ledger", stdout=io.StringIO())  # raises if the funding broke the ledger


def test_bootstrap_without_demo_creates_no_markets(settings: Any) -> None:
    settings.BOURSE_DEMO = False
    call_command("bootstrap_exchange", stdout=io.StringIO())
    assert not Market.objects.exists()
    assert not User.objects.filter(username="marketmaker").exists()


def test_command_quotes_every_demo_market_and_cancels_on_sigterm(live_server: Any, settings: Any) -> None:
    settings.BOURSE_DEMO = True
    call_command("bootstrap_exchange", stdout=io.StringIO())
    maker = User.objects.get(username="marketmaker")
    connection.close()

    def sigterm_once_quoted() -> None:
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                if Order.objects.filter(user=maker).values("market").distinct().count() == 3:
                    break
                time.sleep(0.05)
        finally:
            connection.close()
        # Only if the command installed its handler: the default would kill the test run.
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signal.SIGTERM)

    handler_before = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=sigterm_once_quoted, daemon=True)
    killer.start()
    started = time.monotonic()
    # --cycles only as a safety net (about 30 s): the SIGTERM is what should stop it.
    call_command(
        "run_market_maker", "--api-url", live_server.url, "--interval", "0.2", "--cycles", "150", stdout=io.StringIO()
    )
    assert time.monotonic() - started < 15
    killer.join(5)

    orders = Order.objects.filter(user=maker)
    assert {o.market.symbol for o in orders.select_related("market")} == {"AAPL_USD", "MSFT_USD", "TSLA_USD"}
    # Stopped cleanly, and asked to cancel everything it had quoted on the way out.
    assert not orders.filter(cancel_requested_at__isnull=True).exists()
    assert signal.getsignal(signal.SIGTERM) == handler_before

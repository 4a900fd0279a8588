"""A trader on the live market page in a real browser, with the whole exchange running:
the engine and DB processor (tests/pipeline.py) and the web server as in production.

The page lives on its WebSocket (book deltas, trades, candles, private order updates), and
pytest-django's `live_server` is a WSGI server with no WebSocket. So the site is served
here by daphne, started as a subprocess on a free port against the test database and the
test Redis database — the production server, speaking HTTP and `/ws` on one origin, its
Channels layer shared with the engine. (A `ChannelsLiveServerTestCase` would also serve
both, but runs the app in a fork with its own settings juggling; a subprocess is exactly
what runs in production.) Static files are collected to a temporary STATIC_ROOT first, as
a deployment does, and WhiteNoise serves them.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.tests.factories import fund, make_user
from marketdata.candles import CandleTrade, candles_apply
from marketdata.models import Trade
from tests.pipeline import ROOT, Pipeline, database_url, wait_until
from trading.models import Market, Order
from trading.tests.factories import make_market, place

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def site(tmp_path: Path, redis_conn: Any) -> Iterator[str]:
    """daphne serving the site (HTTP and /ws) on the test database; yields its base URL."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "exchange_site.settings.test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "STATIC_ROOT": str(tmp_path / "static"),
        "PYTHONUNBUFFERED": "1",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    port = _free_port()
    log = open(tmp_path / "daphne.log", "wb")  # noqa: SIM115 — the child writes it for its life
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "exchange_site.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/api/v1/status", timeout=1).status == 200
        except OSError:
            return proc.poll() is not None  # dead: stop waiting, the assert below says so

    wait_until(up, timeout=30, message="daphne to answer")
    assert proc.poll() is None, (tmp_path / "daphne.log").read_text()
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


@pytest.fixture
def pipeline(tmp_path: Path, redis_conn: Any) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path)
    yield p.start()
    p.stop()


def _seed_history(market: Market) -> None:
    """Ninety minutes of earlier trading as candles (what the DB processor wrote then).

    Only candles, no trade rows: trade ids are the engine's to hand out.
    """
    rng = random.Random(7)
    now = timezone.now().replace(second=0, microsecond=0)
    price = Decimal("100.00")
    trades = []
    trade_id = 1
    for minute in range(90, 2, -1):
        for second in (5, 20, 35, 50):
            price = max(Decimal("90.00"), price + Decimal(rng.randint(-30, 32)) / 100)
            quantity = Decimal(rng.randint(1, 40))
            trades.append(CandleTrade(
                market.pk, trade_id, price, quantity, price * quantity,
                now - timedelta(minutes=minute) + timedelta(seconds=second),
            ))
            trade_id += 1
    with transaction.atomic():
        candles_apply(trades=trades)


def _book_ready(symbol: str, levels: int) -> bool:
    from marketdata.depth import depth_snapshot

    snapshot = depth_snapshot(symbol)
    return bool(snapshot) and len(snapshot["bids"]) >= levels and len(snapshot["asks"]) >= levels


def test_trading_screen_live_book_chart_and_my_orders(
    pipeline: Pipeline, site: str, page: Any, screenshot_dir: Path
) -> None:
    from playwright.sync_api import expect

    market = make_market("AAPL", "USD", min_quantity=Decimal("1"), min_notional=Decimal("1.00"))
    _seed_history(market)
    maker = make_user("maker")
    taker = make_user("taker")
    alice: User = make_user("alice", password="trade-all-day-42")
    for user in (maker, taker, alice):
        fund(user, market.quote, Decimal("100000.00"))
        fund(user, market.base, Decimal("5000"))
    # A ladder both sides of 100.00, then two trades that take from it.
    for step in range(1, 9):
        place(maker, market, side="Bid", price=Decimal("100.00") - step * Decimal("0.25"), quantity=Decimal(10 * step))
        place(maker, market, side="Ask", price=Decimal("100.00") + step * Decimal("0.25"), quantity=Decimal(12 * step))
    place(taker, market, side="Bid", price=Decimal("100.50"), quantity=Decimal("20"))
    place(taker, market, side="Ask", price=Decimal("99.75"), quantity=Decimal("4"))
    wait_until(lambda: Trade.objects.filter(market=market).count() >= 3, timeout=30, message=pipeline.logs())
    wait_until(lambda: _book_ready(market.symbol, 7), timeout=30, message="the depth snapshot")

    # Log in, landing on the market page.
    page.goto(f"{site}/login/?next=/markets/AAPL_USD/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("trade-all-day-42")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{site}/markets/AAPL_USD/")
    expect(page.locator("#ws-status")).to_have_text("Live")

    # The book, the trades and the chart come up from the snapshot, REST and the stream.
    expect(page.locator("#book-bids .book__row")).to_have_count(8)
    expect(page.locator("#book-asks .book__row")).to_have_count(7)  # 100.25 was taken, 100.50 in part
    expect(page.locator("#book-bids .book__row").first).to_contain_text("99.75")
    expect(page.locator("#book-asks .book__row").last).to_contain_text("100.50")
    expect(page.locator("#trades-list .trade")).to_have_count(3)
    page.wait_for_function("((window.bourseMarket && window.bourseMarket.shown) || []).length >= 80")
    expect(page.locator("#ticker-last")).not_to_have_text("—")
    page.evaluate("window.__noReload = true")

    # Place a bid through the form; it shows up in my open orders, then the engine's
    # acceptance (account.orderUpdate) turns "Sent" into "New" and the book grows a level.
    form = page.locator("#order-form")
    form.get_by_label("Price").fill("99.90")
    form.get_by_label("Amount").fill("7")
    expect(page.locator("#order-total")).to_have_text("699.30")
    form.get_by_role("button", name="Buy AAPL").click()
    expect(page.locator(".order-notice")).to_contain_text("Order placed: Buy 7 AAPL @ 99.90")
    order = Order.objects.get(user=alice)
    row = page.locator(f'#open-orders tr[data-order-id="{order.pk}"]')
    expect(row).to_contain_text("99.90")
    expect(row).to_contain_text("New", timeout=15_000)
    expect(page.locator('#book-bids .book__row[data-price^="99.9"]')).to_contain_text("7")
    expect(page.locator('[data-asset="USD"] dd').first).to_contain_text("99,299.30")  # 100000 - 699.30 × 1.002, rounded up

    # An off-tick price is refused inline, nothing else changes.
    form = page.locator("#order-form")
    form.get_by_label("Price").fill("99.105")
    form.get_by_label("Amount").fill("1")
    form.get_by_role("button", name="Buy AAPL").click()
    expect(page.locator("#order-form .order-error")).to_contain_text("not a multiple of 0.01")
    assert Order.objects.filter(user=alice).count() == 1

    page.screenshot(path=str(screenshot_dir / "market.png"), full_page=True)

    # Someone sells into alice's bid (the best bid now): the trade prints, her order fills and moves to history.
    place(taker, market, side="Ask", price=Decimal("99.90"), quantity=Decimal("7"))
    expect(page.locator("#trades-list .trade").first).to_contain_text("99.90", timeout=15_000)
    expect(page.locator(f'#order-history tr[data-order-id="{order.pk}"]')).to_contain_text("Filled", timeout=15_000)
    expect(page.locator("#open-orders")).to_contain_text("No open orders")
    expect(page.locator('[data-asset="AAPL"] dd').first).to_contain_text("5,007")
    assert page.evaluate("window.__noReload") is True, "the page reloaded"
    page.screenshot(path=str(screenshot_dir / "market-after-fill.png"), full_page=True)

    # Cancel from the page: a resting sell, then Cancel in my open orders.
    form = page.locator("#order-form")
    form.locator("label.seg__opt--ask").click()
    form.get_by_label("Price").fill("104.00")
    form.get_by_label("Amount").fill("2")
    form.get_by_role("button", name="Sell AAPL").click()
    resting = wait_until(lambda: Order.objects.filter(user=alice, side="Ask").first(), message="the sell order")
    row = page.locator(f'#open-orders tr[data-order-id="{resting.pk}"]')
    expect(row).to_contain_text("New", timeout=15_000)
    row.get_by_role("button", name="Cancel").click()
    # "Cancelling" shows only until the engine's answer arrives, which can beat the click's
    # own swap (trading/tests/test_pages.py checks that state); what stays is the outcome.
    wait_until(lambda: Order.objects.get(pk=resting.pk).status == Order.Status.CANCELLED, message="the cancel")
    expect(row).to_have_count(0, timeout=15_000)
    expect(page.locator(f'#order-history tr[data-order-id="{resting.pk}"]')).to_contain_text("Cancelled", timeout=15_000)

    # A visitor sees the same market, and a prompt instead of the order panel.
    visitor = page.context.browser.new_page(viewport={"width": 1360, "height": 900})
    visitor.goto(f"{site}/markets/AAPL_USD/")
    expect(visitor.get_by_text("Log in to trade")).to_be_visible()
    expect(visitor.locator("#book-bids .book__row").first).to_be_visible()
    visitor.goto(f"{site}/markets/")
    expect(visitor.locator('#markets-table tr[data-symbol="AAPL_USD"]')).to_contain_text("99.90")
    visitor.screenshot(path=str(screenshot_dir / "markets.png"), full_page=True)
    visitor.close()

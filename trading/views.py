"""Traders' pages: the markets list and one market's trading screen.

Public market data (book, trades, candles, ticker) is drawn by `static/js/market.js` from
the bot API's public endpoints and the `/ws` streams; the server renders the frame, the
first book snapshot and everything private: the order panel with its balances, and the
user's open orders and history. Forms follow the account pages' HTMX pattern: a plain POST
redirects, an HTMX POST swaps its fragment, a refusal answers 422 with the error inline.
Private fragments are re-fetched on the `ordersChanged` / `balancesChanged` events, which
the page fires on `account.*` WebSocket frames and which these views send after a change.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from accounts import selectors as account_selectors
from accounts.errors import ServiceError
from accounts.forms import service_error_text
from accounts.models import Balance, User
from marketdata import selectors as marketdata_selectors
from marketdata.depth import depth_snapshot
from marketdata.selectors import Ticker
from trading import selectors, services
from trading.forms import OrderForm
from trading.models import Market, Order

HISTORY_ROWS = 25
# Levels of the book drawn per side; the snapshot handed to the page carries a few more so
# a deleted level is replaced at once by the next one.
BOOK_LEVELS = 15
SNAPSHOT_LEVELS = 50
# Intervals offered above the chart (BOT_API.md's kline intervals, the usual subset).
CHART_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")


class AuthedRequest(HttpRequest):
    user: User


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _market_or_404(symbol: str) -> Market:
    try:
        return services.market_get(symbol)
    except ServiceError:
        raise Http404(f"No market {symbol[:40]}") from None


def _places(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _ticker_row(market: Market, ticker: Ticker | None) -> dict[str, Any]:
    change = ticker.price_change_percent if ticker else None
    return {
        "market": market,
        "price_places": _places(market.tick_size),
        "last_price": ticker.last_price if ticker else None,
        "change_pct": change * 100 if change is not None else None,
        "high": ticker.high if ticker else None,
        "low": ticker.low if ticker else None,
        "volume": ticker.volume if ticker else None,
        "quote_volume": ticker.quote_volume if ticker else None,
    }


def markets_overview() -> list[dict[str, Any]]:
    """Every market with its rolling 24-hour ticker, for the markets list and the landing page."""
    tickers = {t.symbol: t for t in marketdata_selectors.tickers(timezone.now())}
    return [_ticker_row(market, tickers.get(market.symbol)) for market in selectors.markets_all()]


# --- public pages -------------------------------------------------------------------------


@require_GET
def markets(request: HttpRequest) -> HttpResponse:
    return render(request, "trading/markets.html", {"rows": markets_overview()})


@require_GET
def market(request: HttpRequest, symbol: str) -> HttpResponse:
    market = _market_or_404(symbol)
    snapshot = depth_snapshot(market.symbol) or {"bids": [], "asks": [], "lastUpdateId": "0"}
    config = {
        "symbol": market.symbol,
        "base": market.base.symbol,
        "quote": market.quote.symbol,
        "pricePlaces": _places(market.tick_size),
        "qtyPlaces": _places(market.lot_size),
        "bookLevels": BOOK_LEVELS,
        "intervals": CHART_INTERVALS,
        "authenticated": request.user.is_authenticated,
        "wsPath": "/ws",
        "api": {"depth": "/api/v1/depth", "trades": "/api/v1/trades", "klines": "/api/v1/klines", "ticker": "/api/v1/ticker"},
        "snapshot": {
            "bids": snapshot.get("bids", [])[:SNAPSHOT_LEVELS],
            "asks": snapshot.get("asks", [])[:SNAPSHOT_LEVELS],
            "lastUpdateId": str(snapshot.get("lastUpdateId", "0")),
        },
    }
    ticker = _ticker_row(market, marketdata_selectors.ticker(market, timezone.now()))
    config["lastPrice"] = str(ticker["last_price"]) if ticker["last_price"] is not None else None
    context: dict[str, Any] = {
        "market": market,
        "ticker": ticker,
        "price_places": config["pricePlaces"],
        "config": config,
        "intervals": CHART_INTERVALS,
    }
    if request.user.is_authenticated:
        user: User = request.user  # type: ignore[assignment]
        context.update(_panel_context(user, market))
        context.update(_orders_context(user, market))
    return render(request, "trading/market.html", context)


# --- the order panel ----------------------------------------------------------------------


def _market_balances(user: User, market: Market) -> list[Balance]:
    wanted = {market.base.pk: 0, market.quote.pk: 1}
    rows = [b for b in account_selectors.balances_for(user) if b.asset.pk in wanted]
    return sorted(rows, key=lambda b: wanted[b.asset.pk])


def _panel_context(user: User, market: Market, *, form: OrderForm | None = None, notice: str = "") -> dict[str, Any]:
    return {
        "market": market,
        "form": form or OrderForm(market=market),
        "balances": _market_balances(user, market),
        "notice": notice,
    }


def _orders_context(user: User, market: Market, *, notice: str = "", error: str = "") -> dict[str, Any]:
    history = list(
        selectors.order_history_for(user, market=market).exclude(status__in=Order.OPEN_STATUSES)[:HISTORY_ROWS]
    )
    for order in history:
        # Shown, not stored: the average fill price of a finished order.
        order.avg_price = (  # type: ignore[attr-defined]
            order.executed_quote_quantity / order.executed_quantity if order.executed_quantity else None
        )
    return {
        "market": market,
        "price_places": _places(market.tick_size),
        "open_orders": list(selectors.open_orders_for(user, market=market)),
        "history": history,
        "orders_notice": notice,
        "orders_error": error,
    }


def _fragment(request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _describe(order: Order, market: Market) -> str:
    side = "Buy" if order.side == Order.Side.BID else "Sell"
    qty = f"{order.quantity.normalize():f}" if order.quantity is not None else ""
    price = f" @ {order.price.quantize(market.tick_size):f}" if order.price is not None else " at market"
    return f"{side} {qty} {market.base.symbol}{price}"


@login_required
@require_POST
def order_create(request: AuthedRequest, symbol: str) -> HttpResponse:
    market = _market_or_404(symbol)
    form = OrderForm(request.POST, market=market)
    if form.is_valid():
        try:
            order = services.order_place(user=request.user, market=market, params=form.order_params())
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            notice = f"Order placed: {_describe(order, market)}."
            if not _is_htmx(request):
                messages.success(request, notice)
                return redirect("trading:market", symbol=market.symbol)
            # Keep side, type and price for the next order; the quantity is what changes.
            fresh = OrderForm(
                market=market,
                initial={k: form.cleaned_data[k] for k in ("side", "order_type", "post_only", "ioc")}
                | {"price": request.POST.get("price", "")},
            )
            response = _fragment(request, "trading/_order_panel.html", _panel_context(request.user, market, form=fresh, notice=notice))
            response["HX-Trigger"] = json.dumps({"ordersChanged": None})
            return response
    if not _is_htmx(request):
        for error in form.non_field_errors():
            messages.error(request, str(error))
        for field in ("price", "quantity"):
            for error in form.errors.get(field, []):
                messages.error(request, f"{field.capitalize()}: {error}")
        return redirect("trading:market", symbol=market.symbol)
    return _fragment(request, "trading/_order_panel.html", _panel_context(request.user, market, form=form), status=422)


@login_required
@require_GET
def balances(request: AuthedRequest, symbol: str) -> HttpResponse:
    market = _market_or_404(symbol)
    return _fragment(request, "trading/_balances.html", {"market": market, "balances": _market_balances(request.user, market)})


# --- my orders ----------------------------------------------------------------------------


@login_required
@require_GET
def my_orders(request: AuthedRequest, symbol: str) -> HttpResponse:
    market = _market_or_404(symbol)
    return _fragment(request, "trading/_my_orders.html", _orders_context(request.user, market))


def _orders_done(request: AuthedRequest, market: Market, *, notice: str = "", error: str = "") -> HttpResponse:
    if not _is_htmx(request):
        if error:
            messages.error(request, error)
        else:
            messages.success(request, notice)
        return redirect(reverse("trading:market", kwargs={"symbol": market.symbol}))
    context = _orders_context(request.user, market, notice=notice, error=error)
    return _fragment(request, "trading/_my_orders.html", context, status=422 if error else 200)


@login_required
@require_POST
def order_cancel(request: AuthedRequest, symbol: str, order_id: int) -> HttpResponse:
    market = _market_or_404(symbol)
    try:
        order = services.order_cancel(user=request.user, market=market, order_id=order_id)
    except ServiceError as exc:
        return _orders_done(request, market, error=service_error_text(exc))
    return _orders_done(request, market, notice=f"Cancel requested: {_describe(order, market)}.")


@login_required
@require_POST
def order_cancel_all(request: AuthedRequest, symbol: str) -> HttpResponse:
    market = _market_or_404(symbol)
    try:
        cancelled = services.order_cancel_all(user=request.user, market=market)
    except ServiceError as exc:
        return _orders_done(request, market, error=service_error_text(exc))
    count = len(cancelled)
    return _orders_done(request, market, notice=f"Cancel requested for {count} order{'' if count == 1 else 's'}.")

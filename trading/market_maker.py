"""A market maker that quotes through the bot API over HTTP, like any other bot.

ARCHITECTURE.md ("Components"): market makers are clients of the exchange, not part of it.
This module imports nothing from Django and never touches the database or Redis: every
read and every order goes through `BOURSE_API_URL` with `Authorization: Token <key>`, so
the bot exercises the same path (validation, fund locking, idempotency) as outside bots
and could run on another machine. `manage.py run_market_maker` only finds the token and
the markets' reference prices before it hands over.

One cycle, every `interval` seconds:
1. read the balances (`GET /api/v1/capital`) and the open orders (`GET /api/v1/orders`);
2. per market: move the fair price (a small random walk, pulled toward the last trade so
   other users' buying and selling moves it), build a ladder of bids and asks around it;
3. ask to cancel the previous quotes (`DELETE /api/v1/orders`, cancel-all for the market)
   and place the new ladder in ONE `POST /api/v1/orders` with an `Idempotency-Key` of its
   own, so a retried POST never doubles the ladder.

Cancels and places travel on the same engine queue, in that order, so the new ladder
never trades with the old one. Funds locked by the old quotes come back only when the
engine has cancelled them, so the ladder is sized on `available` alone: a side the balance
cannot fund is quoted with fewer levels, or not at all.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any
from urllib import error as urlerror
from urllib import parse, request

logger = logging.getLogger("bourse.market_maker")

# The batch endpoint takes at most 50 orders (trading.api.views.MAX_BATCH).
MAX_LEVELS = 25
# The markets' fee rates are not on the wire; a bid is funded with this margin over its
# notional, above any taker fee Bourse charges (0.20% by default), so a ladder the bot
# thinks it can afford is not refused for funds.
FEE_MARGIN = Decimal("0.01")
# The bot asks the exchange for its markets again this often, to pick up new markets and
# status changes (a halted market is left alone).
MARKETS_REFRESH_SECONDS = 60.0
QUOTABLE = {"Open": False, "LimitOnly": False, "PostOnly": True}  # status -> post-only quotes
SUMMARY_SECONDS = 30.0
# Refusals that mean the market changed under the bot (halted, closed, removed).
MARKET_GONE = {"TRADING_PAUSED", "INVALID_MARKET", "INVALID_SYMBOL"}
# After a 404 from an optional endpoint (ticker, depth), do not ask again for this long.
OPTIONAL_RETRY_SECONDS = 300.0
# How far the fair price is pulled back toward the last trade each cycle; with the random
# walk's step this keeps it within a few steps of where people actually trade (and so
# inside the market's price band).
MEAN_REVERSION = 0.1


class ApiError(Exception):
    """The exchange answered with an error (`{"code","message"}`) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def unreachable(self) -> bool:
        """No answer at all (connection refused, timeout): the server is down or starting."""
        return self.status is None

    @property
    def fatal_for_cycle(self) -> bool:
        """Errors that any other call of this cycle would hit too: back off instead of going on."""
        return self.status is None or self.status >= 500 or self.status in (401, 403, 429)


class HttpApi:
    """A small client for the endpoints the bot uses; only the standard library."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        url = self.base_url + path + (f"?{parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Token {self.token}")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with request.urlopen(req, timeout=self.timeout) as response:  # noqa: S310 - URL from our own settings
                return json.loads(response.read() or b"null")
        except urlerror.HTTPError as exc:
            payload = exc.read()
            code, message = "", payload[:200].decode("utf-8", "replace")
            try:
                parsed = json.loads(payload)
                if isinstance(parsed, dict):
                    code, message = str(parsed.get("code", "")), str(parsed.get("message", message))
            except ValueError:
                pass
            raise ApiError(
                f"{method} {path}: {exc.code} {code} {message}".strip(), status=exc.code, code=code
            ) from None
        except (urlerror.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"{method} {path}: {reason}") from None

    # --- endpoints ---------------------------------------------------------------------
    def markets(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/v1/markets", auth=False))

    def capital(self) -> dict[str, dict[str, str]]:
        return dict(self.call("GET", "/api/v1/capital"))

    def open_orders(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/v1/orders"))

    def cancel_all(self, symbol: str) -> list[dict[str, Any]]:
        return list(self.call("DELETE", "/api/v1/orders", body={"symbol": symbol}))

    def place_batch(self, orders: list[dict[str, Any]], *, idempotency_key: str) -> list[dict[str, Any]]:
        return list(self.call("POST", "/api/v1/orders", body=orders, headers={"Idempotency-Key": idempotency_key}))

    def ticker(self, symbol: str) -> dict[str, Any]:
        return dict(self.call("GET", "/api/v1/ticker", query={"symbol": symbol}, auth=False))

    def depth(self, symbol: str) -> dict[str, Any]:
        return dict(self.call("GET", "/api/v1/depth", query={"symbol": symbol, "limit": "5"}, auth=False))


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """What the bot needs of a market, read off `GET /api/v1/markets`."""

    symbol: str
    base: str
    quote: str
    tick: Decimal
    lot: Decimal
    min_quantity: Decimal
    status: str

    @classmethod
    def from_wire(cls, row: Mapping[str, Any]) -> MarketSpec:
        filters = row["filters"]
        lot = Decimal(filters["quantity"]["stepSize"])
        return cls(
            symbol=row["symbol"],
            base=row["baseSymbol"],
            quote=row["quoteSymbol"],
            tick=Decimal(filters["price"]["tickSize"]),
            lot=lot,
            min_quantity=max(Decimal(filters["quantity"].get("minQuantity") or 0), lot),
            status=row["orderBookState"],
        )


@dataclass(frozen=True, slots=True)
class Quote:
    side: str  # "Bid" or "Ask"
    price: Decimal
    quantity: Decimal


def _round_to(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    return (value / step).to_integral_value(rounding=rounding) * step


def ladder(
    *, market: MarketSpec, fair: Decimal, levels: int, spread_bps: int, step_bps: int, size: Decimal
) -> tuple[list[Quote], list[Quote]]:
    """Bids and asks around `fair`, best first.

    The best bid and best ask are `spread_bps` apart (half on each side of `fair`), the
    next levels `step_bps` further out; bids round down and asks up to the tick, and every
    level is at least one tick from its neighbour, so the ladder is never crossed and no
    two levels share a price. Level i (from 0) quotes (i + 1) × `size` × the market's
    least quantity, so the book thickens away from the touch.
    """
    half = fair * Decimal(spread_bps) / Decimal(20_000)
    step = max(fair * Decimal(step_bps) / Decimal(10_000), market.tick)
    base_qty = _round_to(market.min_quantity * size, market.lot, ROUND_CEILING)
    base_qty = max(base_qty, market.min_quantity)
    bids: list[Quote] = []
    asks: list[Quote] = []
    best_bid = _round_to(fair - half, market.tick, ROUND_FLOOR)
    best_ask = _round_to(fair + half, market.tick, ROUND_CEILING)
    if best_ask <= best_bid:
        best_ask = best_bid + market.tick
    for level in range(levels):
        qty = base_qty * (level + 1)
        bid = _round_to(best_bid - step * level, market.tick, ROUND_FLOOR)
        if bids and bid >= bids[-1].price:
            bid = bids[-1].price - market.tick
        if bid > 0:
            bids.append(Quote("Bid", bid, qty))
        ask = _round_to(best_ask + step * level, market.tick, ROUND_CEILING)
        if asks and ask <= asks[-1].price:
            ask = asks[-1].price + market.tick
        asks.append(Quote("Ask", ask, qty))
    return bids, asks


def fund(quotes: Iterable[Quote], budget: Decimal, *, cost: Callable[[Quote], Decimal]) -> tuple[list[Quote], Decimal]:
    """The quotes, best first, that `budget` can pay for, and what they cost.

    Stops at the first level it cannot pay for: quoting the outer levels without the
    inner ones would leave a hole at the touch.
    """
    funded: list[Quote] = []
    spent = Decimal(0)
    for quote in quotes:
        price = cost(quote)
        if spent + price > budget:
            break
        funded.append(quote)
        spent += price
    return funded, spent


def _decimal_or_none(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number > 0 else None


@dataclass
class _MarketStats:
    cycles: int = 0
    placed: int = 0
    rejected: int = 0
    cancel_requests: int = 0
    one_sided: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class CycleResult:
    """What one cycle did, per market symbol (for tests and the summary)."""

    placed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rejected: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cancelled: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    idempotency_keys: dict[str, str] = field(default_factory=dict)


class MarketMaker:
    """The worker: `setup()`, `run()` (the loop), `stop()` from a signal handler, `shutdown()`.

    `reference_prices` gives a market's reference price where the exchange has no trade yet
    (the command reads it from the database, since the markets endpoint does not show it;
    `--price` overrides it). Before the first trade, the mid of the book is the next choice,
    and a market with none of these is not quoted.
    """

    def __init__(
        self,
        api: HttpApi,
        *,
        symbols: list[str] | None = None,
        interval: float = 2.0,
        levels: int = 5,
        spread_bps: int = 20,
        step_bps: int = 10,
        size: Decimal = Decimal(1),
        volatility_bps: float = 10.0,
        reference_prices: Callable[[], Mapping[str, Decimal]] | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        summary_seconds: float = SUMMARY_SECONDS,
        seed: int | None = None,
    ) -> None:
        if not 1 <= levels <= MAX_LEVELS:
            raise ValueError(f"levels must be between 1 and {MAX_LEVELS}")
        if spread_bps < 0 or step_bps < 0:
            raise ValueError("spread and step must not be negative")
        self.api = api
        self.symbols = symbols
        self.interval = interval
        self.levels = levels
        self.spread_bps = spread_bps
        self.step_bps = step_bps
        self.size = size
        self.volatility = volatility_bps / 10_000
        self.reference_prices = reference_prices or dict
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.summary_seconds = summary_seconds
        self.random = random.Random(seed)
        # One id per run: idempotency keys of two runs never collide.
        self.run_id = uuid.uuid4().hex[:12]
        self.cycle_number = 0
        self.markets: dict[str, MarketSpec] = {}
        self.backoff_delays: list[float] = []
        self._references: dict[str, Decimal] = {}
        self._markets_loaded_at = -math.inf
        self._fair: dict[str, Decimal] = {}
        self._anchor: dict[str, Decimal] = {}
        self._last_trade: dict[str, Decimal] = {}
        self._cancel_sent: set[str] = set()
        self._quoted: set[str] = set()
        self._optional_off_until: dict[str, float] = {}
        self._failures = 0
        self._last_failure_log = -math.inf
        self._stats: dict[str, _MarketStats] = {}
        self._summary_at = time.monotonic() + summary_seconds
        self._stopping = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------
    def setup(self) -> None:
        """Load the markets to quote. Raises ApiError if the exchange cannot be reached."""
        rows = self.api.markets()
        wanted = set(self.symbols) if self.symbols else None
        markets = {}
        for row in rows:
            spec = MarketSpec.from_wire(row)
            if wanted is not None:
                if spec.symbol in wanted and spec.status in QUOTABLE:
                    markets[spec.symbol] = spec
            elif spec.status == "Open":
                markets[spec.symbol] = spec
        if wanted is not None and (unknown := wanted - {MarketSpec.from_wire(r).symbol for r in rows}):
            logger.warning("no such market(s): %s", ", ".join(sorted(unknown)))
        self.markets = markets
        self._references = {symbol: Decimal(price) for symbol, price in self.reference_prices().items()}
        self._markets_loaded_at = time.monotonic()

    def run(self, *, max_cycles: int | None = None) -> None:
        """Quote until `stop()` (or `max_cycles` cycles, failed ones included). Never raises ApiError."""
        done = 0
        while not self._stopping.is_set():
            try:
                self.cycle()
                delay = self.interval
                if self._failures:
                    logger.info("the exchange answers again after %d failed attempt(s)", self._failures)
                self._failures = 0
            except ApiError as exc:
                delay = self._backoff(exc)
            done += 1
            self._maybe_summarise()
            if max_cycles is not None and done >= max_cycles:
                break
            self._stopping.wait(delay)

    def stop(self) -> None:
        """Safe from a signal handler: the loop ends after the current cycle (or at once when waiting)."""
        self._stopping.set()

    def shutdown(self) -> None:
        """Cancel the quotes on the way out, best effort: a dead server cannot hold the exit up."""
        for symbol in sorted(self._quoted):
            try:
                cancelled = self.api.cancel_all(symbol)
                logger.info("%s: asked to cancel %d open order(s) on the way out", symbol, len(cancelled))
            except ApiError as exc:
                # Under `bourse.py run` the web server stops with us: expected, and the next
                # start's first cycle cancels what is left (cancel-all of any open order).
                logger.log(
                    logging.INFO if exc.unreachable else logging.WARNING,
                    "%s: could not cancel the quotes on the way out: %s",
                    symbol,
                    exc,
                )
                if exc.unreachable:
                    # The server is gone (it stops with us): do not wait out a timeout per market.
                    break
        self._quoted.clear()
        self._log_summary()

    def _backoff(self, exc: ApiError) -> float:
        self._failures += 1
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (self._failures - 1))
        self.backoff_delays.append(delay)
        now = time.monotonic()
        # The first failure of a streak, then at most one line per summary period.
        if self._failures == 1 or now - self._last_failure_log >= self.summary_seconds:
            self._last_failure_log = now
            if exc.unreachable:
                logger.info("waiting for the exchange at %s (%s); retry in %.1f s", self.api.base_url, exc, delay)
            else:
                logger.warning("%s; retry in %.1f s (failure %d)", exc, delay, self._failures)
        return delay

    # --- one cycle ---------------------------------------------------------------------
    def cycle(self) -> CycleResult:
        """Requote every market once. Raises ApiError when the whole cycle cannot go on."""
        if time.monotonic() - self._markets_loaded_at > MARKETS_REFRESH_SECONDS:
            self.setup()
        self.cycle_number += 1
        result = CycleResult()
        balances = self.api.capital()
        available = {asset: Decimal(row.get("available", "0")) for asset, row in balances.items()}
        open_ids: dict[str, set[str]] = {}
        for order in self.api.open_orders():
            open_ids.setdefault(order["symbol"], set()).add(str(order["id"]))
        # Forget cancels that have gone through; what is left is still waiting on the engine.
        self._cancel_sent &= {order_id for ids in open_ids.values() for order_id in ids}
        for symbol, market in sorted(self.markets.items()):
            try:
                self._quote_market(market, available, open_ids.get(symbol, set()), result)
            except ApiError as exc:
                if exc.fatal_for_cycle:
                    raise
                # This market only (removed, halted, a refused batch): the others go on;
                # reload the markets next cycle in case its status changed.
                stats = self._stats_for(symbol)
                stats.errors[exc.code or str(exc.status)] = stats.errors.get(exc.code or str(exc.status), 0) + 1
                result.skipped[symbol] = str(exc)
                self._markets_loaded_at = -math.inf
                logger.warning("%s: %s", symbol, exc)
        return result

    def _quote_market(
        self, market: MarketSpec, available: dict[str, Decimal], open_ids: set[str], result: CycleResult
    ) -> None:
        stats = self._stats_for(market.symbol)
        stats.cycles += 1
        fair = self._next_fair(market)
        if fair is None:
            result.skipped[market.symbol] = "no price: no trade, no reference, no book and no --price"
            return
        if open_ids - self._cancel_sent:
            cancelled = self.api.cancel_all(market.symbol)
            self._cancel_sent |= open_ids | {str(order["id"]) for order in cancelled}
            stats.cancel_requests += 1
            result.cancelled[market.symbol] = len(cancelled)

        bids, asks = ladder(
            market=market,
            fair=fair,
            levels=self.levels,
            spread_bps=self.spread_bps,
            step_bps=self.step_bps,
            size=self.size,
        )
        bids, spent_quote = fund(
            bids, available.get(market.quote, Decimal(0)), cost=lambda q: q.price * q.quantity * (1 + FEE_MARGIN)
        )
        asks, spent_base = fund(asks, available.get(market.base, Decimal(0)), cost=lambda q: q.quantity)
        # The next market shares the quote balance: spend it only once per cycle.
        available[market.quote] = available.get(market.quote, Decimal(0)) - spent_quote
        available[market.base] = available.get(market.base, Decimal(0)) - spent_base
        if not bids or not asks:
            stats.one_sided += 1
        if not bids and not asks:
            result.skipped[market.symbol] = "no funds for either side"
            return

        post_only = QUOTABLE.get(market.status, False)
        orders = [
            {
                "symbol": market.symbol,
                "side": quote.side,
                "orderType": "Limit",
                "price": f"{quote.price.normalize():f}",
                "quantity": f"{quote.quantity.normalize():f}",
                "timeInForce": "GTC",
                "postOnly": post_only,
                "selfTradePrevention": "RejectTaker",
            }
            for quote in bids + asks
        ]
        key = f"mm-{self.run_id}-{self.cycle_number}-{market.symbol}"
        answers = self._place(orders, key)
        placed = [answer for answer in answers if "id" in answer]
        rejected = [answer for answer in answers if "id" not in answer]
        for answer in rejected:
            code = str(answer.get("code", "?"))
            stats.errors[code] = stats.errors.get(code, 0) + 1
            if code in MARKET_GONE:
                # Halted or removed since the markets were read: read them again next cycle.
                self._markets_loaded_at = -math.inf
        stats.placed += len(placed)
        stats.rejected += len(rejected)
        self._quoted.add(market.symbol)
        result.placed[market.symbol] = placed
        result.rejected[market.symbol] = rejected
        result.idempotency_keys[market.symbol] = key

    def _place(self, orders: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        """One batch POST; a lost answer is retried once with the same key, so it lands once."""
        try:
            return self.api.place_batch(orders, idempotency_key=key)
        except ApiError as exc:
            if not exc.unreachable and (exc.status or 0) < 500:
                raise
            return self.api.place_batch(orders, idempotency_key=key)

    # --- the price ---------------------------------------------------------------------
    def _next_fair(self, market: MarketSpec) -> Decimal | None:
        """This cycle's fair price: a random walk pulled toward the last trade (or the start price)."""
        symbol = market.symbol
        last = self._optional_price(symbol, "ticker", self._ticker_last)
        fair = self._fair.get(symbol)
        if fair is None:
            start = last or self._references.get(symbol) or self._optional_price(symbol, "depth", self._depth_mid)
            if start is None:
                return None
            self._fair[symbol] = self._anchor[symbol] = start
            if last is not None:
                self._last_trade[symbol] = last
            return start
        if last is not None and last != self._last_trade.get(symbol):
            # Someone traded: people's orders move the market, not only the walk.
            self._last_trade[symbol] = last
            self._anchor[symbol] = last
        anchor = self._anchor[symbol]
        step = math.exp(self.random.gauss(0.0, self.volatility))
        moved = float(fair) * step + MEAN_REVERSION * (float(anchor) - float(fair))
        fair = Decimal(repr(max(moved, float(market.tick))))
        self._fair[symbol] = fair
        return fair

    def _optional_price(self, symbol: str, endpoint: str, read: Callable[[str], Decimal | None]) -> Decimal | None:
        """A price from an endpoint the exchange may not have yet (404): then ask again later."""
        if time.monotonic() < self._optional_off_until.get(endpoint, -math.inf):
            return None
        try:
            return read(symbol)
        except ApiError as exc:
            if exc.status == 404:
                self._optional_off_until[endpoint] = time.monotonic() + OPTIONAL_RETRY_SECONDS
                return None
            if exc.fatal_for_cycle:
                raise
            return None

    def _ticker_last(self, symbol: str) -> Decimal | None:
        ticker = self.api.ticker(symbol)
        # Before its first trade a market may show no last price, zero, or `trades` 0.
        if str(ticker.get("trades", "")) == "0":
            return None
        return _decimal_or_none(ticker.get("lastPrice"))

    def _depth_mid(self, symbol: str) -> Decimal | None:
        depth = self.api.depth(symbol)
        # Not relying on the levels' order: clients disagree on which end is the best.
        bids = [p for p in (_decimal_or_none(level[0]) for level in depth.get("bids") or []) if p is not None]
        asks = [p for p in (_decimal_or_none(level[0]) for level in depth.get("asks") or []) if p is not None]
        best_bid = max(bids) if bids else None
        best_ask = min(asks) if asks else None
        if best_bid is not None and best_ask is not None:
            return (best_bid + best_ask) / 2
        return best_bid or best_ask

    # --- logging -----------------------------------------------------------------------
    def _stats_for(self, symbol: str) -> _MarketStats:
        return self._stats.setdefault(symbol, _MarketStats())

    def _maybe_summarise(self) -> None:
        if time.monotonic() >= self._summary_at:
            self._log_summary()

    def _log_summary(self) -> None:
        """One line per market per period, instead of one per cycle."""
        self._summary_at = time.monotonic() + self.summary_seconds
        for symbol, stats in sorted(self._stats.items()):
            if not stats.cycles:
                continue
            fair = self._fair.get(symbol)
            errors = ", ".join(f"{code}×{count}" for code, count in sorted(stats.errors.items()))
            logger.info(
                "%s: fair %s, %d cycle(s), %d order(s) placed, %d refused, %d cancel-all, %d one-sided%s",
                symbol,
                f"{fair:.4f}" if fair is not None else "unknown",
                stats.cycles,
                stats.placed,
                stats.rejected,
                stats.cancel_requests,
                stats.one_sided,
                f" ({errors})" if errors else "",
            )
        self._stats.clear()

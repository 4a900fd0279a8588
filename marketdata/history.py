"""Candle history that did not come from the engine: synthetic (`generate_history`) or
imported from CSV (`import_history`).

Only the 1m candles are produced row by row; every higher interval is then aggregated from
the level below it in SQL (`candles_rebuild`), so all intervals agree exactly as they do
when the DB processor maintains them (`marketdata.candles`). `date_bin` from the same
origin gives the same buckets as `marketdata.candles.bucket_start` and TimescaleDB's
`time_bucket`, and it exists without TimescaleDB (PostgreSQL 14+), as the embedded server
requires.

History candles carry `first_trade_id = last_trade_id = 0` (no engine trade made them):
if a live trade later lands in one of their buckets, the candle upsert keeps the history's
open (0 is older than any engine trade id) and lets the live trade set the close, which is
the order in which they happened.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from marketdata.candles import MONTH, ORIGIN, WIDTHS, CandleTrade, bucket_next, bucket_start, candles_apply
from trading.models import Market

ONE_MINUTE = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Each interval above 1m is aggregated from a finer one whose buckets tile it exactly;
# the chain reads far fewer rows than aggregating everything from 1m (a year of 1m candles
# is 525,600 rows per market, of 1h only 8,760). In dependency order.
SOURCE: dict[str, str] = {
    "3m": "1m", "5m": "1m", "15m": "5m", "30m": "15m", "1h": "30m", "2h": "1h", "4h": "2h", "6h": "2h",
    "8h": "4h", "12h": "4h", "1d": "12h", "3d": "1d", "1w": "1d", MONTH: "1d",
}

_CANDLE_COLUMNS = (
    'market_id, "interval", start, open, high, low, close, volume, quote_volume, trades, first_trade_id, last_trade_id'
)

_AGGREGATE = f"""
INSERT INTO marketdata_candle AS c ({_CANDLE_COLUMNS})
SELECT market_id, %(target)s, {{bucket}} AS b,
       (array_agg(open ORDER BY start))[1], max(high), min(low), (array_agg(close ORDER BY start DESC))[1],
       sum(volume), sum(quote_volume), sum(trades), min(first_trade_id), max(last_trade_id)
FROM marketdata_candle
WHERE market_id = %(market)s AND "interval" = %(source)s AND start >= %(lo)s AND start < %(hi)s
GROUP BY market_id, b
ON CONFLICT (market_id, "interval", start) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, trades = EXCLUDED.trades,
    first_trade_id = EXCLUDED.first_trade_id, last_trade_id = EXCLUDED.last_trade_id
"""


def _bucket_sql(interval: str) -> str:
    if interval == MONTH:
        return "date_trunc('month', start, 'UTC')"
    return "date_bin(%(width)s, start, %(origin)s)"


def candles_rebuild(*, market_id: int, since: datetime, until: datetime) -> None:
    """Recompute every interval above 1m, for the buckets overlapping [since, until), from
    the market's 1m candles.

    Precondition: the 1m candles of [since, until) are final, and outside that range the
    market's candles already agree across intervals (each target bucket is re-aggregated
    whole, from source rows that may lie outside the range).
    """
    if until <= since:
        return
    last = until - timedelta(microseconds=1)
    params: dict[str, Any] = {"market": market_id, "origin": ORIGIN}
    with connection.cursor() as cursor:
        for target, source in SOURCE.items():
            lo = bucket_start(target, since)
            hi = bucket_next(target, bucket_start(target, last))
            params.update(target=target, source=source, lo=lo, hi=hi, width=WIDTHS.get(target))
            cursor.execute(_AGGREGATE.format(bucket=_bucket_sql(target)), params)


# --- synthetic history -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalkParams:
    """A geometric random walk per minute with GARCH(1,1) volatility clustering and an
    intraday U-shaped activity profile (busy at the day's open and close, quiet midday)."""

    daily_volatility: float = 0.02
    alpha: float = 0.06  # weight of the last shock
    beta: float = 0.92  # persistence of volatility
    mean_volume_lots: float = 40.0  # per minute, at average activity


def _seasonality() -> list[float]:
    # Activity by minute of the UTC day, normalised so its mean square is 1 (the daily
    # volatility is then what WalkParams says).
    raw = [0.45 + 1.6 * ((m - 720) / 720) ** 2 for m in range(1440)]
    scale = math.sqrt(sum(x * x for x in raw) / len(raw))
    return [x / scale for x in raw]


def _places(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def synthetic_minutes(
    market: Market, start: datetime, minutes: int, *, anchor: Decimal, rng: random.Random,
    params: WalkParams = WalkParams(),  # noqa: B008 — frozen, never mutated
) -> Iterator[str]:
    """COPY text lines of `minutes` 1m candles from `start` (a minute boundary), the walk
    scaled so that the last close is `anchor`; prices on the tick, volumes on the lot."""
    season = _seasonality()
    variance = (params.daily_volatility ** 2) / 1440
    omega = variance * (1 - params.alpha - params.beta)
    sig2 = variance
    gauss, rand = rng.gauss, rng.random
    exp, sqrt = math.exp, math.sqrt
    log_prices: list[float] = []  # log of each open relative to the first; then the close
    highs: list[float] = []
    lows: list[float] = []
    volumes: list[float] = []
    first_minute = int((start - _EPOCH) // ONE_MINUTE)
    x = 0.0
    for i in range(minutes):
        s = season[(first_minute + i) % 1440]
        sigma = sqrt(sig2) * s
        r = sigma * gauss(0.0, 1.0)
        sig2 = omega + params.alpha * (r / s) ** 2 + params.beta * sig2
        log_prices.append(x)
        top = (x if r < 0 else x + r) + sigma * 0.6 * -math.log(1.0 - rand())
        bottom = (x + r if r < 0 else x) - sigma * 0.6 * -math.log(1.0 - rand())
        highs.append(top)
        lows.append(bottom)
        # Volume follows activity and the size of the move, with a heavy-tailed noise.
        volumes.append(params.mean_volume_lots * s * (0.5 + abs(r) / sigma) * exp(gauss(0.0, 0.6)))
        x += r
    log_prices.append(x)

    tick, lot = float(market.tick_size), float(market.lot_size)
    price_places, qty_places = _places(market.tick_size), _places(market.lot_size)
    quote_places = market.quote.precision
    shift = math.log(float(anchor)) - x  # the last close becomes the anchor
    clock = start
    day = ""
    next_day = clock
    for i in range(minutes):
        if clock >= next_day:
            day = clock.strftime("%Y-%m-%d")
            next_day = clock.replace(hour=0, minute=0) + timedelta(days=1)
        o = max(1, round(exp(log_prices[i] + shift) / tick))
        c = max(1, round(exp(log_prices[i + 1] + shift) / tick))
        h = max(o, c, round(exp(highs[i] + shift) / tick))
        low = max(1, min(o, c, round(exp(lows[i] + shift) / tick)))
        lots = max(1, round(volumes[i]))
        qty = lots * lot
        typical = (o + h + low + c) * tick / 4
        trades = max(1, int(lots / (2.0 + 6.0 * rand())))
        yield (
            f"{market.pk}\t1m\t{day} {clock.hour:02d}:{clock.minute:02d}:00+00\t"
            f"{o * tick:.{price_places}f}\t{h * tick:.{price_places}f}\t{low * tick:.{price_places}f}\t"
            f"{c * tick:.{price_places}f}\t{qty:.{qty_places}f}\t{qty * typical:.{quote_places}f}\t{trades}\t0\t0\n"
        )
        clock += ONE_MINUTE


def copy_candle_lines(lines: Iterable[str], *, progress: Callable[[int], None] | None = None, chunk: int = 20_000) -> int:
    """COPY tab-separated candle lines (all columns of `_CANDLE_COLUMNS`) in the current
    transaction; how many were written. COPY fails on a bucket that already exists."""
    written = 0
    raw = connection.connection
    with raw.cursor() as cursor, cursor.copy(f"COPY marketdata_candle ({_CANDLE_COLUMNS}) FROM STDIN") as copy:
        buffer: list[str] = []
        for line in lines:
            buffer.append(line)
            if len(buffer) >= chunk:
                copy.write("".join(buffer))
                written += len(buffer)
                if progress:
                    progress(len(buffer))
                buffer = []
        if buffer:
            copy.write("".join(buffer))
            written += len(buffer)
            if progress:
                progress(len(buffer))
    return written


def first_candle_start(market_id: int) -> datetime | None:
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT min(start) FROM marketdata_candle WHERE market_id = %s AND "interval" = %s', [market_id, "1m"]
        )
        row = cursor.fetchone()
    return row[0] if row else None


@transaction.atomic
def history_generate(
    *, market: Market, end: datetime, days: int, anchor: Decimal, seed: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write `days` days of synthetic 1m candles ending at `end` (a minute boundary,
    exclusive), and every higher interval, for one market; how many 1m candles.

    Precondition: the market has no candle in [end - days, end) (the caller ends the
    history before the market's first candle, so real data is never overwritten).
    """
    minutes = days * 1440
    start = end - minutes * ONE_MINUTE
    rng = random.Random(f"{seed}:{market.symbol}")
    written = copy_candle_lines(synthetic_minutes(market, start, minutes, anchor=anchor, rng=rng), progress=progress)
    candles_rebuild(market_id=market.pk, since=start, until=end)
    return written


# --- import ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OhlcvRow:
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int


_UPSERT_1M = f"""
INSERT INTO marketdata_candle AS c ({_CANDLE_COLUMNS})
SELECT %s, '1m', * FROM unnest(%s::timestamptz[], %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[],
                               %s::numeric[], %s::numeric[], %s::bigint[], %s::bigint[], %s::bigint[])
ON CONFLICT (market_id, "interval", start) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, trades = EXCLUDED.trades
"""


@transaction.atomic
def history_import_ohlcv(
    *, market: Market, rows: Sequence[OhlcvRow], progress: Callable[[int], None] | None = None, chunk: int = 20_000
) -> int:
    """Upsert 1m candles (a row for an existing bucket replaces its figures, so importing
    the same file twice changes nothing) and re-aggregate the higher intervals they touch.

    Precondition: rows are validated (minute-aligned, unique starts, OHLC consistent).
    """
    if not rows:
        return 0
    with connection.cursor() as cursor:
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            zeros = [0] * len(part)
            cursor.execute(
                _UPSERT_1M,
                [
                    market.pk, [r.start for r in part], [r.open for r in part], [r.high for r in part],
                    [r.low for r in part], [r.close for r in part], [r.volume for r in part],
                    [r.quote_volume for r in part], [r.trades for r in part], zeros, zeros,
                ],
            )
            if progress:
                progress(len(part))
    since = min(r.start for r in rows)
    until = max(r.start for r in rows) + ONE_MINUTE
    candles_rebuild(market_id=market.pk, since=since, until=until)
    return len(rows)


@dataclass(frozen=True, slots=True)
class TradeRow:
    time: datetime
    price: Decimal
    quantity: Decimal


# Imported trades get negative ids, apart from the engine's (which count up from 1), that
# grow with time (so the candles' open/close-by-trade-id rule orders them by time) and are
# the same on every import of the same file (so a re-import inserts nothing twice).
_IMPORT_ID_BASE = -(2**62)
SAME_MICROSECOND_MAX = 16


def import_trade_id(time: datetime, index_in_microsecond: int) -> int:
    micros = (time - _EPOCH) // timedelta(microseconds=1)
    return _IMPORT_ID_BASE + micros * SAME_MICROSECOND_MAX + index_in_microsecond


_INSERT_TRADES = """
INSERT INTO marketdata_trade
    (market_id, trade_id, price, quantity, quote_quantity, buy_order_id, sell_order_id, buyer_id, seller_id,
     is_buyer_maker, time)
SELECT %s, t.trade_id, t.price, t.quantity, t.price * t.quantity, 0, 0, 0, 0, false, t.time
FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[], %s::timestamptz[]) AS t(trade_id, price, quantity, time)
ON CONFLICT (market_id, trade_id, time) DO NOTHING
RETURNING trade_id, price, quantity, quote_quantity, time
"""


@transaction.atomic
def history_import_trades(
    *, market: Market, rows: Sequence[TradeRow], progress: Callable[[int], None] | None = None, chunk: int = 20_000
) -> int:
    """Insert trades not imported before (no orders, users or fills: buyer, seller and
    order ids are 0) and fold exactly those into the candles; how many were new.

    Precondition: at most SAME_MICROSECOND_MAX rows share a timestamp.
    """
    seen: dict[datetime, int] = {}
    ids: list[int] = []
    for row in rows:
        k = seen.get(row.time, 0)
        seen[row.time] = k + 1
        ids.append(import_trade_id(row.time, k))
    inserted = 0
    with connection.cursor() as cursor:
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            cursor.execute(
                _INSERT_TRADES,
                [market.pk, ids[i : i + chunk], [r.price for r in part], [r.quantity for r in part],
                 [r.time for r in part]],
            )
            new = [CandleTrade(market.pk, tid, price, qty, quote, when) for tid, price, qty, quote, when in cursor.fetchall()]
            # Only the trades inserted now: candles_apply adds volume, so a re-import must not.
            candles_apply(trades=new)
            inserted += len(new)
            if progress:
                progress(len(part))
    return inserted

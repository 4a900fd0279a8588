"""The public `ticker.<sym>` and `kline.<interval>.<sym>` streams (BOT_API.md, WebSocket).

Published from the stored candles, never from the engine's events: a frame shows only what
is committed (ARCHITECTURE.md step 3), and the candles are what the klines endpoint serves,
so a chart fed by REST and then by the stream never disagrees with itself.

- After each DB processor transaction with trades (`publish_after_commit`): for every market
  with new trades, one `ticker` frame and, per interval, the candle of each bucket the trades
  fell in (`X` false while the bucket is open, true for a late trade in a bucket that has
  ended). Two queries for the whole transaction, whatever the number of markets: one SELECT
  of exactly the touched candles, one for the tickers; one Channels send per group.
- Each minute (`publish_closed_candles`, run by `marketdata.jobs`): every candle whose bucket
  has just ended, `X` true, gap-filled from the previous close with zero volume when nothing
  traded in it, as the klines endpoint fills gaps.

The stream ticker is the rolling 24 hours at minute granularity, summed from candles (1m at
both edges, 1h in between: at most ~140 rows per market), where the REST ticker
(`marketdata.selectors.ticker`) aggregates the trades themselves: scanning a busy market's
day of trades after every batch would cost the DB processor more than the batch.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.utils import timezone

from marketdata.candles import INTERVALS, bucket_next, bucket_previous, bucket_start
from marketdata.realtime import kline_group, public_group

if TYPE_CHECKING:
    from engine_worker.worker import Publisher

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE_US = 60_000_000
TICKER_WINDOW_MINUTES = 1440
_KLINE_TIME = "%Y-%m-%dT%H:%M:%S"  # UTC, as Backpack sends `t`/`T`

Groups = dict[str, list[dict[str, Any]]]


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _now_us(now: datetime) -> int:
    return (now - _EPOCH) // timedelta(microseconds=1)


def kline_data(
    symbol: str, interval: str, start: datetime, ohlc: tuple[Decimal, Decimal, Decimal, Decimal],
    volume: Decimal, trades: int, *, now: datetime,
) -> dict[str, Any]:
    end = bucket_next(interval, start)
    o, h, low, c = ohlc
    return {
        "e": "kline", "E": _now_us(now), "s": symbol,
        "t": start.astimezone(UTC).strftime(_KLINE_TIME), "T": end.astimezone(UTC).strftime(_KLINE_TIME),
        "o": _fmt(o), "c": _fmt(c), "h": _fmt(h), "l": _fmt(low), "v": _fmt(volume), "n": int(trades),
        "X": end <= now,
    }


def _add(groups: Groups, group: str, stream: str, data: dict[str, Any]) -> None:
    groups[group].append({"stream": stream, "data": data})


# --- after a DB processor transaction --------------------------------------------------------


def traded_minutes(payloads: Iterable[Mapping[str, Any]]) -> dict[str, set[int]]:
    """Symbol -> the minutes (µs since the epoch // 60 s) its trades in these engine batches
    fell in. Read straight off the encoded events (`[kind, symbol, seq, ts, …]`, kind "T"
    for a trade) without decoding the rest of the batch."""
    minutes: dict[str, set[int]] = defaultdict(set)
    for payload in payloads:
        for row in payload["events"]:
            if row[0] == "T":
                minutes[row[1]].add(int(row[3]) // _MINUTE_US)
    return minutes


_TOUCHED_CANDLES = """
SELECT k.symbol, c."interval", c.start, c.open, c.high, c.low, c.close, c.volume, c.trades
FROM unnest(%s::varchar[], %s::varchar[], %s::timestamptz[]) AS k(symbol, iv, start)
JOIN trading_market m ON m.symbol = k.symbol
JOIN marketdata_candle c ON c.market_id = m.id AND c."interval" = k.iv AND c.start = k.start
ORDER BY k.symbol, c.start, c."interval"
"""

# The rolling window [w0, now] of whole minutes: 1m candles for the partial hours at both
# ends, 1h candles for the whole hours between [h1, hn). All on the (market, interval, start)
# index.
_STREAM_TICKERS = """
WITH rows AS (
    SELECT c.market_id, c.start, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades
    FROM marketdata_candle c
    WHERE c.market_id = ANY(%(ids)s::bigint[]) AND c."interval" = '1m'
      AND ((c.start >= %(w0)s AND c.start < %(h1)s) OR (c.start >= %(hn)s AND c.start <= %(now)s))
    UNION ALL
    SELECT c.market_id, c.start, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades
    FROM marketdata_candle c
    WHERE c.market_id = ANY(%(ids)s::bigint[]) AND c."interval" = '1h' AND c.start >= %(h1)s AND c.start < %(hn)s
)
SELECT r.market_id, (array_agg(r.open ORDER BY r.start))[1], (array_agg(r.close ORDER BY r.start DESC))[1],
       max(r.high), min(r.low), sum(r.volume), sum(r.quote_volume), sum(r.trades)
FROM rows r GROUP BY r.market_id
"""


def ticker_frames(symbols: Sequence[str], *, now: datetime) -> Groups:
    """`ticker.<sym>` frames: the rolling 24 hours, by whole minutes, up to `now`'s minute."""
    if not symbols:
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, symbol FROM trading_market WHERE symbol = ANY(%s)", [list(symbols)])
        by_id = dict(cursor.fetchall())
        if not by_id:
            return {}
        current = bucket_start("1m", now)
        w0 = current - timedelta(minutes=TICKER_WINDOW_MINUTES - 1)
        h1 = bucket_start("1h", w0)
        if h1 < w0:
            h1 += timedelta(hours=1)
        cursor.execute(
            _STREAM_TICKERS, {"ids": list(by_id), "w0": w0, "h1": h1, "hn": bucket_start("1h", now), "now": current}
        )
        rows = cursor.fetchall()
    groups: Groups = defaultdict(list)
    now_us = _now_us(now)
    for market_id, o, c, h, low, volume, quote_volume, trades in rows:
        symbol = by_id[market_id]
        _add(groups, public_group("ticker", symbol), "ticker." + symbol, {
            "e": "ticker", "E": now_us, "s": symbol, "o": _fmt(o), "c": _fmt(c), "h": _fmt(h), "l": _fmt(low),
            "v": _fmt(volume), "V": _fmt(quote_volume), "n": int(trades),
        })
    return groups


def kline_frames(minutes: Mapping[str, set[int]], *, now: datetime) -> Groups:
    """`kline.<interval>.<sym>` frames for every bucket, of every interval, holding one of
    these minutes (oldest first, so the open candle comes last)."""
    keys: set[tuple[str, str, datetime]] = set()
    for symbol, market_minutes in minutes.items():
        for minute in market_minutes:
            when = _EPOCH + timedelta(minutes=minute)
            keys.update((symbol, interval, bucket_start(interval, when)) for interval in INTERVALS)
    if not keys:
        return {}
    ordered = sorted(keys)
    with connection.cursor() as cursor:
        cursor.execute(
            _TOUCHED_CANDLES, [[k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered]]
        )
        rows = cursor.fetchall()
    groups: Groups = defaultdict(list)
    for symbol, interval, start, o, h, low, c, volume, trades in rows:
        _add(groups, kline_group(interval, symbol), f"kline.{interval}.{symbol}",
             kline_data(symbol, interval, start, (o, h, low, c), volume, trades, now=now))
    return groups


def _send(groups: Groups, publisher: Publisher | None) -> None:
    from engine_worker.worker import send_groups  # deferred: the engine process imports marketdata

    send_groups(groups, publisher)


def publish_after_commit(payloads: Iterable[Mapping[str, Any]], publisher: Publisher | None = None) -> None:
    """Publish the ticker and klines of every market these engine batches traded in.

    Call after the transaction that applied them committed (the frames are read from the
    stored candles). A batch applied again (a redelivery) publishes the same current figures
    again, which a client cannot tell from one frame. Never raises: persistence is done, and
    a client that misses a frame reads the klines endpoint.
    """
    try:
        minutes = traded_minutes(payloads)
        if not minutes:
            return
        now = timezone.now()
        groups = kline_frames(minutes, now=now)
        for group, messages in ticker_frames(sorted(minutes), now=now).items():
            groups[group] = messages
        _send(groups, publisher)
    except Exception:
        logger.exception("publishing ticker and kline streams failed")


# --- each minute --------------------------------------------------------------------------


# Every market's candle in each just-ended bucket, or, where nothing traded, the close of the
# latest candle before it (one probe of the (market, interval, start DESC) index).
_CLOSED = """
SELECT m.symbol, k.iv, k.start, c.open, c.high, c.low, c.close, c.volume, c.trades, p.close
FROM trading_market m
CROSS JOIN unnest(%s::varchar[], %s::timestamptz[]) AS k(iv, start)
LEFT JOIN marketdata_candle c ON c.market_id = m.id AND c."interval" = k.iv AND c.start = k.start
LEFT JOIN LATERAL (
    SELECT p.close FROM marketdata_candle p
    WHERE c.market_id IS NULL AND p.market_id = m.id AND p."interval" = k.iv AND p.start < k.start
    ORDER BY p.start DESC LIMIT 1
) p ON true
ORDER BY m.symbol, k.start, k.iv
"""


def buckets_ended(since: datetime, until: datetime) -> list[tuple[str, datetime]]:
    """(interval, start) of every bucket whose end is in (since, until], oldest first."""
    out: list[tuple[str, datetime]] = []
    for interval in INTERVALS:
        start = bucket_previous(interval, bucket_start(interval, until))
        found = []
        while bucket_next(interval, start) > since:
            found.append((interval, start))
            start = bucket_previous(interval, start)
        out += reversed(found)
    return out


def closed_candle_frames(since: datetime, until: datetime) -> Groups:
    """`X: true` kline frames of every market for the buckets that ended in (since, until]."""
    ended = buckets_ended(since, until)
    if not ended:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_CLOSED, [[iv for iv, _ in ended], [start for _, start in ended]])
        rows = cursor.fetchall()
    groups: Groups = defaultdict(list)
    for symbol, interval, start, o, h, low, c, volume, trades, previous in rows:
        if o is None:
            if previous is None:
                continue  # never traded before this bucket: no price to show
            o = h = low = c = previous
            volume, trades = Decimal(0), 0
        data = kline_data(symbol, interval, start, (o, h, low, c), volume, trades, now=until)
        data["X"] = True
        _add(groups, kline_group(interval, symbol), f"kline.{interval}.{symbol}", data)
    return groups


def publish_closed(since: datetime, until: datetime, publisher: Publisher | None = None) -> int:
    """Publish the candles that ended in (since, until]; how many frames."""
    groups = closed_candle_frames(since, until)
    _send(groups, publisher)
    return sum(len(messages) for messages in groups.values())

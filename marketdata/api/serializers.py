"""Market data on the wire, in Backpack's shapes (BOT_API.md), as CCXT's `backpack` reads them."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from marketdata.models import Trade
from marketdata.selectors import Kline, Ticker
from trading.api.serializers import decimal, ms

_KLINE_TIME = "%Y-%m-%d %H:%M:%S"  # UTC; CCXT reads it with parse8601


def ticker(row: Ticker) -> dict[str, Any]:
    change, percent = row.price_change, row.price_change_percent
    return {
        "symbol": row.symbol,
        "firstPrice": decimal(row.first_price),
        "lastPrice": decimal(row.last_price),
        "high": decimal(row.high),
        "low": decimal(row.low),
        "priceChange": decimal(change) if change is not None else "0",
        # A fraction; rounded so a repeating quotient does not run to 28 digits.
        "priceChangePercent": decimal(round(percent, 6)) if percent is not None else "0",
        "volume": decimal(row.volume),
        "quoteVolume": decimal(row.quote_volume),
        "trades": str(row.trades),
    }


def trade(row: Trade) -> dict[str, Any]:
    return {
        "id": row.trade_id,
        "price": decimal(row.price),
        "quantity": decimal(row.quantity),
        "quoteQuantity": decimal(row.quote_quantity),
        "timestamp": ms(row.time),
        "isBuyerMaker": row.is_buyer_maker,
    }


# Cached: a chart asks for the same buckets again and again, and strftime is the dearest
# step of serializing 1,000 candles.
@lru_cache(maxsize=16384)
def _kline_time(epoch: int) -> str:
    return time.strftime(_KLINE_TIME, time.gmtime(epoch))


def kline(row: Kline) -> dict[str, Any]:
    return {
        "start": _kline_time(row.start),
        "end": _kline_time(row.end),
        "open": row.open,
        "high": row.high,
        "low": row.low,
        "close": row.close,
        "volume": row.volume,
        "quoteVolume": row.quote_volume,
        "trades": str(row.trades),
        # Not in Backpack's shape: whether the bucket has ended (only the last one may not have).
        "closed": row.closed,
    }

"""`python manage.py import_history --file F.csv --symbol SYM [--format ohlcv|trades]`

- `ohlcv` (default): rows `time, open, high, low, close, volume[, quote_volume, trades]`, one
  per 1m bucket, upserted as 1m candles (a re-import replaces the same buckets with the
  same figures); every higher interval they touch is re-aggregated.
- `trades`: rows `time, price, quantity`, inserted as trades (no orders, users or fills)
  and folded into the candles by `marketdata.candles.candles_apply`; a re-import inserts
  nothing twice (each row's trade id is derived from its time, see
  `marketdata.history.import_trade_id`).

`time` is ISO 8601 (UTC when it has no offset) or a Unix time in seconds (or milliseconds,
when it is that large). A header line is skipped when its first field is not a time. Every
row is checked before anything is written; the first bad rows are reported by line number
and nothing is imported.
"""

from __future__ import annotations

import csv
from argparse import ArgumentParser
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from marketdata.history import (
    SAME_MICROSECOND_MAX,
    OhlcvRow,
    TradeRow,
    history_import_ohlcv,
    history_import_trades,
)
from marketdata.management.progress import ProgressBar
from trading.models import Market

MAX_REPORTED = 10
_MS_THRESHOLD = 100_000_000_000  # a Unix time above this (year 5138 in seconds) is in ms


class RowError(ValueError):
    pass


def parse_time(text: str) -> datetime:
    text = text.strip()
    if not text:
        raise RowError("time is empty")
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = None
    if number is not None:
        if not number.is_finite() or number < 0:
            raise RowError(f"time {text!r} is not a Unix time")
        seconds = number / 1000 if number >= _MS_THRESHOLD else number
        micros = int(seconds * 1_000_000)
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RowError(f"time {text!r} is neither ISO 8601 nor a Unix time") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _decimal(name: str, text: str, *, step: Decimal | None = None, positive: bool = True) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise RowError(f"{name} {text!r} is not a number") from exc
    if not value.is_finite():
        raise RowError(f"{name} {text!r} is not a number")
    if positive and value <= 0:
        raise RowError(f"{name} must be positive, got {text.strip()}")
    if value < 0:
        raise RowError(f"{name} must not be negative, got {text.strip()}")
    if step is not None and value % step:
        raise RowError(f"{name} {text.strip()} is not a multiple of {step.normalize():f}")
    return value


def parse_ohlcv(fields: list[str], market: Market) -> OhlcvRow:
    if len(fields) not in (6, 8):
        raise RowError(f"expected 6 or 8 fields (time, open, high, low, close, volume[, quote_volume, trades]), got {len(fields)}")
    start = parse_time(fields[0])
    if start.second or start.microsecond:
        raise RowError(f"time {fields[0].strip()} is not the start of a minute")
    tick, lot = market.tick_size, market.lot_size
    o, h, low, c = (_decimal(n, f, step=tick) for n, f in zip(("open", "high", "low", "close"), fields[1:5], strict=True))
    volume = _decimal("volume", fields[5], step=lot, positive=False)
    if h < max(o, c, low) or low > min(o, c):
        raise RowError(f"high {fields[2].strip()} / low {fields[3].strip()} do not contain open and close")
    if len(fields) == 8:
        quote_volume = _decimal("quote_volume", fields[6], positive=False)
        try:
            trades = int(fields[7].strip())
        except ValueError as exc:
            raise RowError(f"trades {fields[7].strip()!r} is not a whole number") from exc
        if trades < 0:
            raise RowError("trades must not be negative")
    else:
        # Estimated from the bar: the exact figure needs the trades the file does not have.
        quote_volume = (volume * (o + h + low + c) / 4).quantize(Decimal(1).scaleb(-market.quote.precision))
        trades = 0
    return OhlcvRow(start, o, h, low, c, volume, quote_volume, trades)


def parse_trade(fields: list[str], market: Market) -> TradeRow:
    if len(fields) != 3:
        raise RowError(f"expected 3 fields (time, price, quantity), got {len(fields)}")
    return TradeRow(
        parse_time(fields[0]),
        _decimal("price", fields[1], step=market.tick_size),
        _decimal("quantity", fields[2], step=market.lot_size),
    )


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(newline="") as handle:
        for line_number, fields in enumerate(csv.reader(handle), start=1):
            if fields and any(f.strip() for f in fields):
                yield line_number, fields


class Command(BaseCommand):
    help = "Import 1m OHLCV candles or trades for one market from a CSV file."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--file", required=True, type=Path)
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--format", choices=("ohlcv", "trades"), default="ohlcv")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        symbol = options["symbol"].upper()
        market = Market.objects.select_related("quote").filter(symbol=symbol).first()
        if market is None:
            raise CommandError(f"{symbol}: no such market")
        fmt: str = options["format"]
        parse: Callable[[list[str], Market], Any] = parse_ohlcv if fmt == "ohlcv" else parse_trade

        parsed: list[Any] = []
        errors: list[str] = []
        lines: dict[Any, int] = {}
        first = True
        for line_number, fields in _rows(path):
            try:
                row = parse(fields, market)
            except RowError as exc:
                if first:  # a header line
                    first = False
                    try:
                        parse_time(fields[0])
                    except RowError:
                        continue
                errors.append(f"line {line_number}: {exc}")
                if len(errors) >= MAX_REPORTED:
                    break
                continue
            first = False
            key = row.start if fmt == "ohlcv" else row.time
            count = lines.get(key, 0)
            if fmt == "ohlcv" and count:
                errors.append(f"line {line_number}: a second row for the minute {key:%Y-%m-%d %H:%M}")
            elif fmt == "trades" and count >= SAME_MICROSECOND_MAX:
                errors.append(f"line {line_number}: more than {SAME_MICROSECOND_MAX} trades at {key.isoformat()}")
            lines[key] = count + 1
            parsed.append(row)
        if errors:
            raise CommandError(f"{path}: nothing imported.\n" + "\n".join(errors))
        if not parsed:
            raise CommandError(f"{path}: no rows")

        bar = ProgressBar(len(parsed), f"{symbol} {fmt}")
        if fmt == "ohlcv":
            parsed.sort(key=lambda r: r.start)
            written = history_import_ohlcv(market=market, rows=parsed, progress=bar.update)
            what = f"{written:,} 1m candles upserted"
        else:
            written = history_import_trades(market=market, rows=parsed, progress=bar.update)
            what = f"{written:,} new trades of {len(parsed):,}"
        bar.close()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE marketdata_candle")
        self.stdout.write(f"{symbol}: {what} (and the higher intervals) in {bar.elapsed:.1f} s")

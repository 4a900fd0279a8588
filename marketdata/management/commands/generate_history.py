"""`python manage.py generate_history --days N --markets M [--symbols AAPL_USD …] [--seed S]`

Synthetic 1m candle history (a geometric random walk with volatility clustering and an
intraday activity profile; see `marketdata.history.synthetic_minutes`) for N days and M
markets, and every higher interval aggregated from it, for charts, demos and the klines
bench. Markets named in `--symbols` are created when missing (a stock against USD, tick
0.01, lot 1); otherwise the first existing markets by symbol are used and `GEN<n>_USD`
markets are created to make up M.

Candles only: no Trade rows are written (the 24-hour ticker and the trades endpoints read
trades, so they show only real trading). History never overwrites: for a market that
already has candles it ends where they begin, and its last close is their first open.
"""

from __future__ import annotations

import random
from argparse import ArgumentParser
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from accounts.errors import ServiceError
from accounts.models import Asset
from accounts.services import asset_create
from marketdata.candles import bucket_start
from marketdata.history import first_candle_start, history_generate
from marketdata.management.progress import ProgressBar
from marketdata.models import Candle
from trading.models import Market, MarketState
from trading.services import market_create


def _asset(symbol: str, *, quote: bool) -> Asset:
    asset = Asset.objects.filter(symbol=symbol).first()
    if asset is not None:
        return asset
    return asset_create(
        symbol=symbol, name=symbol, precision=2 if quote else 0,
        kind=Asset.Kind.CASH if quote else Asset.Kind.STOCK,
    )


@transaction.atomic
def _market(symbol: str) -> Market:
    market = Market.objects.select_related("quote").filter(symbol=symbol).first()
    if market is not None:
        return market
    base, sep, quote = symbol.partition("_")
    if not sep or not base or not quote:
        raise CommandError(f"{symbol}: a market symbol is BASE_QUOTE, e.g. AAPL_USD")
    try:
        created = market_create(
            base=_asset(base, quote=False), quote=_asset(quote, quote=True),
            tick_size=Decimal("0.01"), lot_size=Decimal("1"),
        )
    except ServiceError as exc:
        raise CommandError(f"{symbol}: {exc}") from exc
    return Market.objects.select_related("quote").get(pk=created.pk)


def _markets(symbols: list[str], count: int) -> list[Market]:
    chosen = [_market(s) for s in symbols]
    if len(chosen) < count:
        taken = {m.pk for m in chosen}
        for market in Market.objects.select_related("quote").exclude(pk__in=taken).order_by("symbol"):
            if len(chosen) >= count:
                break
            chosen.append(market)
        n = 1
        while len(chosen) < count:
            symbol = f"GEN{n}_USD"
            n += 1
            if any(m.symbol == symbol for m in chosen):
                continue
            chosen.append(_market(symbol))
    return chosen


def _anchor(market: Market, first_start: datetime | None, rng: random.Random) -> Decimal:
    """The price the history ends at: where the market's real data begins, if it has any."""
    if first_start is not None:
        first_open = (
            Candle.objects.filter(market=market, interval="1m", start=first_start).values_list("open", flat=True).first()
        )
        if first_open:
            return Decimal(first_open)
    last = MarketState.objects.filter(market=market).values_list("last_price", flat=True).first()
    if last:
        return Decimal(last)
    return Decimal(market.reference_price or Decimal(rng.randrange(2000, 50000)) * market.tick_size)


class Command(BaseCommand):
    help = "Generate synthetic 1m candle history (and every higher interval) for N days and M markets."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--days", type=int, required=True)
        parser.add_argument("--markets", type=int, default=1, help="how many markets (default 1)")
        parser.add_argument("--symbols", nargs="*", default=[], help="markets to use first (created if missing)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--end", help="end of the history, ISO 8601 UTC (default: this minute)")

    def handle(self, *args: Any, **options: Any) -> None:
        days: int = options["days"]
        if days < 1:
            raise CommandError("--days must be at least 1")
        symbols: list[str] = [s.upper() for s in options["symbols"]]
        count = max(options["markets"], len(symbols))
        if count < 1:
            raise CommandError("--markets must be at least 1")
        end = timezone.now()
        if options["end"]:
            try:
                end = datetime.fromisoformat(options["end"])
            except ValueError as exc:
                raise CommandError(f"--end: {exc}") from exc
            end = end.replace(tzinfo=UTC) if end.tzinfo is None else end
        end = bucket_start("1m", end)
        seed: int = options["seed"]
        markets = _markets(symbols, count)
        bar = ProgressBar(days * 1440 * len(markets), "1m candles")
        total = 0
        for market in markets:
            first = first_candle_start(market.pk)
            market_end = min(end, first) if first is not None else end
            anchor = _anchor(market, first, random.Random(f"{seed}:{market.symbol}:anchor"))
            total += history_generate(
                market=market, end=market_end, days=days, anchor=anchor, seed=seed, progress=bar.update
            )
        bar.close()
        # Fresh statistics, or the planner costs the new rows as if the table were empty.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE marketdata_candle")
        self.stdout.write(
            f"{total:,} 1m candles (and every higher interval) for {', '.join(m.symbol for m in markets)}"
            f" in {bar.elapsed:.1f} s"
        )

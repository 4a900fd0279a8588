"""Candle history: `generate_history` and `import_history`.

Every interval above 1m must equal the aggregation of its 1m candles, bucketed here in
Python by `marketdata.candles.bucket_start` (the DB processor's own alignment), while the
commands aggregate in SQL with `date_bin`: two independent routes to the same candles.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from engine_worker.tests.factories import make_market
from marketdata.candles import INTERVALS, bucket_start
from marketdata.models import Candle, Trade
from trading.models import Market

pytestmark = pytest.mark.django_db

D = Decimal
FIELDS = ("start", "open", "high", "low", "close", "volume", "quote_volume", "trades")


def _rows(market: Market, interval: str) -> list[tuple[Any, ...]]:
    return list(Candle.objects.filter(market=market, interval=interval).order_by("start").values_list(*FIELDS))


def _aggregate(minutes: list[tuple[Any, ...]], interval: str) -> list[tuple[Any, ...]]:
    groups: dict[datetime, list[tuple[Any, ...]]] = defaultdict(list)
    for row in minutes:
        groups[bucket_start(interval, row[0])].append(row)
    out = []
    for start in sorted(groups):
        rows = groups[start]
        out.append((
            start, rows[0][1], max(r[2] for r in rows), min(r[3] for r in rows), rows[-1][4],
            sum(r[5] for r in rows), sum(r[6] for r in rows), sum(r[7] for r in rows),
        ))
    return out


def _assert_intervals_agree(market: Market) -> None:
    minutes = _rows(market, "1m")
    for interval in INTERVALS[1:]:
        assert _rows(market, interval) == _aggregate(minutes, interval), interval


def test_generate_history_writes_agreeing_candles_for_every_interval(capsys: Any) -> None:
    existing = make_market("AAPL", "USD", tick="0.01", lot="1")
    end = datetime(2026, 2, 27, 13, 30, tzinfo=UTC)  # two days cross a month's end
    call_command("generate_history", days=2, markets=2, seed=7, end=end.isoformat())

    generated = list(Market.objects.order_by("symbol"))
    assert [m.symbol for m in generated] == ["AAPL_USD", "GEN1_USD"]  # the existing market, then a new one
    assert "5,760 1m candles" in capsys.readouterr().out
    for market in generated:
        minutes = _rows(market, "1m")
        assert len(minutes) == 2 * 1440
        assert (minutes[0][0], minutes[-1][0]) == (end - timedelta(days=2), end - timedelta(minutes=1))
        for before, after in zip(minutes, minutes[1:], strict=False):
            assert after[1] == before[4], "each minute opens at the previous close"
        for _start, o, h, low, c, volume, _quote, trades in minutes:
            assert low > 0 and low <= min(o, c) and h >= max(o, c) and volume > 0 and trades > 0
            assert all(price % market.tick_size == 0 for price in (o, h, low, c))
        # Not a flat line: the walk moves.
        assert len({row[4] for row in minutes}) > 50
        _assert_intervals_agree(market)
        # The one-hour candle is exactly its sixty minutes.
        hour = datetime(2026, 2, 26, 9, tzinfo=UTC)
        [h1] = Candle.objects.filter(market=market, interval="1h", start=hour).values_list(*FIELDS)
        sixty = [r for r in minutes if hour <= r[0] < hour + timedelta(hours=1)]
        assert len(sixty) == 60
        assert h1 == _aggregate(sixty, "1h")[0]
    assert existing.pk == generated[0].pk


def test_generate_history_never_overwrites_and_ends_where_real_candles_begin() -> None:
    end = datetime(2026, 2, 27, 13, 30, tzinfo=UTC)
    call_command("generate_history", days=1, symbols=["AAPL_USD"], seed=1, end=end.isoformat())
    market = Market.objects.get(symbol="AAPL_USD")
    first = _rows(market, "1m")[0]
    # Run again: a day more, before the first, the new history closing at its open.
    call_command("generate_history", days=1, symbols=["AAPL_USD"], seed=2, end=end.isoformat())
    minutes = _rows(market, "1m")
    assert len(minutes) == 2 * 1440
    assert minutes[1440] == first
    assert minutes[1439][4] == first[1]
    _assert_intervals_agree(market)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "history.csv"
    path.write_text(text)
    return path


OHLCV = """time,open,high,low,close,volume
2026-03-01T09:58:00Z,100.00,101.00,99.50,100.50,10
1772359140,100.50,100.50,100.00,100.20,4
2026-03-01 10:00:00,100.20,102.00,100.10,101.90,6
"""


def test_import_ohlcv_writes_1m_and_higher_candles_and_a_reimport_changes_nothing(tmp_path: Path) -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    path = _csv(tmp_path, OHLCV)
    call_command("import_history", file=str(path), symbol="AAPL_USD")
    before = {interval: _rows(market, interval) for interval in INTERVALS}

    assert [(r[0], r[4], r[5]) for r in before["1m"]] == [
        (datetime(2026, 3, 1, 9, 58, tzinfo=UTC), D("100.5"), D("10")),
        (datetime(2026, 3, 1, 9, 59, tzinfo=UTC), D("100.2"), D("4")),
        (datetime(2026, 3, 1, 10, 0, tzinfo=UTC), D("101.9"), D("6")),
    ]
    assert [r[:6] for r in before["1h"]] == [
        (datetime(2026, 3, 1, 9, tzinfo=UTC), D("100"), D("101"), D("99.5"), D("100.2"), D("14")),
        (datetime(2026, 3, 1, 10, tzinfo=UTC), D("100.2"), D("102"), D("100.1"), D("101.9"), D("6")),
    ]
    assert [r[:6] for r in before["1d"]] == [
        (datetime(2026, 3, 1, tzinfo=UTC), D("100"), D("102"), D("99.5"), D("101.9"), D("20")),
    ]
    _assert_intervals_agree(market)

    call_command("import_history", file=str(path), symbol="AAPL_USD")
    assert {interval: _rows(market, interval) for interval in INTERVALS} == before


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("2026-03-01T10:01:00Z,100.00,99.00,98.00,100.00,1", "line 3: high 99.00 / low 98.00 do not contain open and close"),
        ("2026-03-01T10:01:30Z,100,100,100,100,1", "line 3: time 2026-03-01T10:01:30Z is not the start of a minute"),
        ("2026-03-01T10:01:00Z,100.001,101,99,100,1", "line 3: open 100.001 is not a multiple of 0.01"),
        ("yesterday,100,101,99,100,1", "line 3: time 'yesterday' is neither ISO 8601 nor a Unix time"),
        ("2026-03-01T09:58:00Z,100,101,99,100,1", "line 3: a second row for the minute 2026-03-01 09:58"),
    ],
)
def test_import_rejects_a_bad_row_by_line_number_and_writes_nothing(tmp_path: Path, bad_line: str, message: str) -> None:
    make_market("AAPL", "USD", tick="0.01", lot="1")
    path = _csv(tmp_path, "time,open,high,low,close,volume\n2026-03-01T09:58:00Z,100,101,99,100,1\n" + bad_line + "\n")
    with pytest.raises(CommandError) as excinfo:
        call_command("import_history", file=str(path), symbol="AAPL_USD")
    assert message in str(excinfo.value)
    assert "nothing imported" in str(excinfo.value)
    assert not Candle.objects.exists()


def test_import_trades_makes_trades_and_candles_once(tmp_path: Path) -> None:
    market = make_market("AAPL", "USD", tick="0.01", lot="1")
    path = _csv(tmp_path, (
        "2026-03-01T09:59:10Z,50.00,2\n"
        "2026-03-01T09:59:40Z,52.00,1\n"
        "2026-03-01T09:59:40Z,49.00,3\n"  # same time: kept in file order
        "2026-03-01T10:00:05Z,51.00,5\n"
    ))
    call_command("import_history", file=str(path), symbol="AAPL_USD", format="trades")
    call_command("import_history", file=str(path), symbol="AAPL_USD", format="trades")

    assert Trade.objects.filter(market=market).count() == 4
    assert [r[1:] for r in _rows(market, "1m")] == [
        (D("50"), D("52"), D("49"), D("49"), D("6"), D("299"), 3),
        (D("51"), D("51"), D("51"), D("51"), D("5"), D("255"), 1),
    ]
    assert [r[1:] for r in _rows(market, "1d")] == [(D("50"), D("52"), D("49"), D("51"), D("11"), D("554"), 4)]
    _assert_intervals_agree(market)

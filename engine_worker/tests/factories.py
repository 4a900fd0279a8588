"""Markets, orders and engine runs for tests (any app's tests may use these).

Orders are placed through `trading.services.order_place`, so their locks and ledger entries
are real; `EngineRun` drives the REAL engine core with the commands the queue would carry
(`trading.messaging` builds them, `engine_worker.codec.decode_command` decodes them) and
turns its events into the `db_processor` batch payload.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from accounts.models import Asset
from accounts.tests.factories import make_asset
from engine_worker.codec import decode_command, encode_event
from engine_worker.engine import Command, Engine, Event
from trading import messaging, services
from trading.models import Market, Order
from trading.services import OrderParams

# Precision used when a test asks for an asset that does not exist yet.
_PRECISION = {"USD": 2, "EUR": 2, "AAPL": 0, "MSFT": 0, "BTC": 8}
_KIND = {"USD": "cash", "EUR": "cash"}


def make_market(
    base: str = "AAPL",
    quote: str = "USD",
    tick: str = "0.01",
    lot: str = "1",
    *,
    base_precision: int | None = None,
    quote_precision: int | None = None,
    **kw: Any,
) -> Market:
    """A market through `market_create` (assets made as needed); `kw` go to `market_create`."""
    base_asset = make_asset(base, precision=_precision(base, base_precision), kind=_KIND.get(base, "stock"))
    quote_asset = make_asset(quote, precision=_precision(quote, quote_precision), kind=_KIND.get(quote, "stock"))
    market = services.market_create(
        base=base_asset, quote=quote_asset, tick_size=Decimal(tick), lot_size=Decimal(lot), **kw
    )
    return Market.objects.select_related("base", "quote").get(pk=market.pk)


def _precision(symbol: str, given: int | None) -> int:
    return given if given is not None else _PRECISION.get(symbol, 2)


def place(
    user: Any,
    market: Market,
    side: str,
    price: Decimal | str | int | None,
    qty: Decimal | str | int | None,
    *,
    quote_quantity: Decimal | str | None = None,
    tif: str = Order.TimeInForce.GTC,
    post_only: bool = False,
    client_id: int | None = None,
    stp: str = Order.SelfTradePrevention.REJECT_TAKER,
) -> Order:
    """An order through `order_place`: a limit order, or a market order when `price` is None."""
    params = OrderParams(
        side=side,
        order_type=Order.Type.LIMIT if price is not None else Order.Type.MARKET,
        price=None if price is None else Decimal(price),
        quantity=None if qty is None else Decimal(qty),
        quote_quantity=None if quote_quantity is None else Decimal(quote_quantity),
        time_in_force=tif,
        post_only=post_only,
        client_id=client_id,
        self_trade_prevention=stp,
    )
    return services.order_place(user=user, market=market, params=params)


def place_command(order: Order) -> Command:
    """The engine command the queue carries for this order."""
    command = decode_command(services.place_message_for(order))
    assert command is not None
    return command


def cancel_command(order: Order) -> Command:
    command = decode_command(messaging.cancel_message(order))
    assert command is not None
    return command


def batch_payload(events: Iterable[Event], *, epoch: int = 1) -> dict[str, Any]:
    """The `db_processor` job argument the engine pushes for these events."""
    return {"epoch": epoch, "events": [encode_event(event) for event in events]}


class EngineRun:
    """The real engine core with the given markets added, as `run_engine` would start it."""

    def __init__(self, *markets: Market) -> None:
        self.engine = Engine()
        for market in markets:
            command = decode_command(messaging.market_message(market, created=True))
            assert command is not None
            self.engine.apply(command)

    def apply(self, *items: Order | Command) -> list[Event]:
        """Apply orders (as their place commands) and commands in order; their events."""
        commands = [place_command(item) if isinstance(item, Order) else item for item in items]
        return self.engine.apply_batch(commands)

    def batch(self, *items: Order | Command, epoch: int = 1) -> dict[str, Any]:
        return batch_payload(self.apply(*items), epoch=epoch)


def asset(symbol: str) -> Asset:
    return Asset.objects.get(symbol=symbol)

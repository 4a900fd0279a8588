"""JSON encoding of engine commands (from `messages`) and events (to `db_processor`).

Events travel as compact lists `[kind, field1, field2, ...]` in the dataclass field order,
so a batch of thousands of events stays small and cheap to encode; `decode_event` gives
back the engine's own dataclasses. Commands arrive as the dicts `trading.messaging` builds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from operator import attrgetter
from typing import Any

from engine_worker.engine import (
    AddMarket,
    BestBidAsk,
    BookLevel,
    CancelAll,
    CancelOrder,
    Command,
    Event,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderRejected,
    OrderUpdate,
    PlaceOrder,
    Trade,
    UpdateMarket,
)

EVENT_KINDS: dict[str, type[Any]] = {
    "A": OrderAccepted,
    "R": OrderRejected,
    "T": Trade,
    "U": OrderUpdate,
    "C": OrderCancelled,
    "X": OrderExpired,
    "M": OrderAmended,
    "L": BookLevel,
    "B": BestBidAsk,
}
_KIND_OF = {cls: kind for kind, cls in EVENT_KINDS.items()}
_GETTERS = {cls: attrgetter(*(f.name for f in fields(cls))) for cls in EVENT_KINDS.values()}


def encode_event(event: Event) -> list[Any]:
    cls = type(event)
    return [_KIND_OF[cls], *_GETTERS[cls](event)]


def encode_events(events: Iterable[Event]) -> list[tuple[Any, ...]]:
    """`encode_event` for a whole batch, as tuples (they serialise as the same JSON lists)."""
    kind_of, getters = _KIND_OF, _GETTERS
    return [(kind_of[type(e)], *getters[type(e)](e)) for e in events]


def decode_event(row: list[Any]) -> Event:
    return EVENT_KINDS[row[0]](*row[1:])  # type: ignore[no-any-return]


# Messages for the engine process itself rather than its books.
CONTROL_KINDS = frozenset({"rebuild", "dump"})


class BadCommand(ValueError):
    """A message on `messages` that is not a valid command; logged and skipped."""


def decode_command(message: dict[str, Any]) -> Command | None:
    """The engine command for a queue message, or None for a control message (CONTROL_KINDS)."""
    kind = message.get("kind")
    ts = int(message["ts"]) if "ts" in message else 0
    if kind == "place":
        return PlaceOrder(
            order_id=int(message["order_id"]), user_id=int(message["user_id"]), symbol=message["symbol"],
            side=message["side"], order_type=message["type"], price=int(message["price"] or 0),
            quantity=None if message["quantity"] is None else int(message["quantity"]), ts=ts,
            quote_cap=None if message.get("quote_cap") is None else int(message["quote_cap"]),
            time_in_force=message.get("tif", "GTC"), post_only=bool(message.get("post_only", False)),
            self_trade_prevention=message.get("stp", "RejectTaker"), client_id=message.get("client_id"),
        )
    if kind == "cancel":
        return CancelOrder(
            symbol=message["symbol"], user_id=int(message["user_id"]), ts=ts,
            order_id=message.get("order_id"), client_id=message.get("client_id"),
        )
    if kind == "cancel_all":
        return CancelAll(user_id=int(message["user_id"]), ts=ts, symbol=message.get("symbol"))
    if kind == "add_market":
        return AddMarket(
            symbol=message["symbol"], ts=ts, status=message["status"], maker_fee_ppm=int(message["maker_fee_ppm"]),
            taker_fee_ppm=int(message["taker_fee_ppm"]), band_bps=int(message["band_bps"]),
            reference_price=int(message.get("reference_price") or 0),
        )
    if kind == "update_market":
        return UpdateMarket(
            symbol=message["symbol"], ts=ts, status=message.get("status"),
            maker_fee_ppm=message.get("maker_fee_ppm"), taker_fee_ppm=message.get("taker_fee_ppm"),
            band_bps=message.get("band_bps"), reference_price=message.get("reference_price"),
        )
    if kind in CONTROL_KINDS:
        return None
    raise BadCommand(f"unknown message kind {kind!r}")

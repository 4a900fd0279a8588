"""The engine process: drains `messages` in batches, matches in memory, hands events on.

Shaped like Zulip's queue processors (STYLE.md 4): `setup()` rebuilds the books from the
database, `consume(batch)` decodes and applies one batch of commands, `stop()` asks the
loop to finish after the current batch. The core (`engine_worker.engine`) does the
matching; this module does the I/O around it, in the order ARCHITECTURE.md fixes:

1. pop a batch of commands off `messages`;
2. apply them to the in-memory books;
3. push all of the batch's events as ONE job to `db_processor` (the truth from here on);
4. only then publish to the Channels groups (one send per group per batch) and write each
   touched market's L2 snapshot to Redis, so nothing is shown that a crash could take back.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from channels.layers import get_channel_layer
from django.db import close_old_connections

from engine_worker import codec, transport
from engine_worker.engine import (
    AddMarket,
    BestBidAsk,
    BookLevel,
    Engine,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderRejected,
    OrderUpdate,
    Trade,
)
from engine_worker.faults import fault_point
from marketdata.depth import depth_key
from marketdata.realtime import public_group, stream_message, user_group

logger = logging.getLogger("bourse.engine")

DEPTH_LEVELS = 100
EPOCH_KEY = "bourse:engine:epoch"
HEARTBEAT_KEY = "bourse:engine:heartbeat"
BOOKS_KEY = "bourse:engine:books"


class MarketUnits:
    """What turns the engine's integers back into decimals for one market.

    The texts are cached per tick and per lot count: a market trades at a few hundred
    prices and sizes, and formatting a Decimal for every frame was the engine's largest
    single cost.
    """

    __slots__ = ("tick", "lot", "_prices", "_qtys", "_quotes")

    def __init__(self, tick: Decimal, lot: Decimal) -> None:
        self.tick = tick
        self.lot = lot
        self._prices: dict[int, str] = {}
        self._qtys: dict[int, str] = {}
        self._quotes: dict[int, str] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MarketUnits) and (self.tick, self.lot) == (other.tick, other.lot)

    __hash__ = None  # type: ignore[assignment]

    def price(self, ticks: int) -> str:
        text = self._prices.get(ticks)
        if text is None:
            text = _cache_put(self._prices, ticks, _fmt(ticks * self.tick))
        return text

    def qty(self, lots: int) -> str:
        text = self._qtys.get(lots)
        if text is None:
            text = _cache_put(self._qtys, lots, _fmt(lots * self.lot))
        return text

    def quote(self, units: int) -> str:
        text = self._quotes.get(units)
        if text is None:
            text = _cache_put(self._quotes, units, _fmt(units * self.tick * self.lot))
        return text


_CACHE_MAX = 50_000


def _cache_put(cache: dict[int, str], key: int, text: str) -> str:
    if len(cache) >= _CACHE_MAX:  # bounded: quote amounts are many
        cache.clear()
    cache[key] = text
    return text


def _fmt(value: Decimal) -> str:
    # Plain notation without trailing zeros ("100.5", "3"), as clients expect decimals.
    return format(value.normalize(), "f")


@dataclass(slots=True)
class _OrderInfo:
    """What the engine's order events lack for the wire's orderUpdate (side, type, ...)."""

    side: str
    order_type: str
    price: int
    quantity: int | None
    client_id: int | None


class EngineWorker:
    def __init__(self, *, batch_size: int = 2000, block_seconds: float = 1.0, linger_seconds: float = 0.0) -> None:
        self.batch_size = batch_size
        self.block_seconds = block_seconds
        self.linger_seconds = linger_seconds
        # Jobs on `messages` hold one command or a request's list of them; pop about
        # `batch_size` commands' worth of jobs, from the recent job size.
        self._commands_per_job = 1.0
        self.running = True
        self.engine = Engine()
        self.units: dict[str, MarketUnits] = {}
        self.orders: dict[int, _OrderInfo] = {}
        self.epoch = 0
        self.messages = transport.get_queue(transport.MESSAGES_QUEUE)
        self.db_queue = transport.get_queue(transport.DB_QUEUE)
        self.redis = self.messages.connection
        self.publisher = Publisher()
        self._stats_at = time.monotonic()
        self._stats_commands = 0
        self._stats_events = 0
        self._last_lag_ms = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    def setup(self) -> None:
        self.rebuild(reason="start")

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        self.publisher.close()

    def run(self) -> None:
        self.setup()
        # The books hold hundreds of thousands of long-lived objects and every batch
        # allocates tens of thousands of short-lived (acyclic) ones: the cyclic GC's passes
        # cost more than matching. Start-up objects are frozen out of it, and it runs only
        # between batches (reference counting frees a batch's garbage as it goes).
        gc.freeze()
        while self.running:
            gc.disable()
            try:
                want = max(1, int(self.batch_size / self._commands_per_job))
                batch, jobs = transport.pop_commands(self.messages, want, self.block_seconds)
                if batch:
                    self._commands_per_job = 0.8 * self._commands_per_job + 0.2 * (len(batch) / jobs)
                    self.consume(batch)
            finally:
                gc.enable()
            self._log_stats()
            if 0 < jobs < want and self.linger_seconds > 0:
                # A trickle, not a backlog: let the next commands gather for a moment. Each
                # batch costs the same Redis round trips, publishes and DB processor job
                # whether it holds one command or hundreds; at a few hundred orders/s that
                # per-batch cost was most of the engine's CPU. A command arriving after a
                # quiet spell still wakes the engine at once (BLPOP); this only delays
                # commands that follow a batch closely, by at most the linger.
                time.sleep(self.linger_seconds)

    # --- rebuild --------------------------------------------------------------------------

    def wait_for_db_processor(self, timeout: float | None = None) -> None:
        """Block until the DB processor has applied or dropped every queued batch."""
        started = time.monotonic()
        last_log = 0.0
        while self.running:
            pending = transport.queue_length(self.db_queue)
            if pending == 0:
                return
            waited = time.monotonic() - started
            if timeout is not None and waited > timeout:
                raise TimeoutError(f"db_processor still has {pending} batches after {timeout:.0f}s")
            if waited - last_log >= 5:
                logger.info("waiting for the DB processor to apply %d queued batches", pending)
                last_log = waited
            time.sleep(0.05)

    def rebuild(self, *, reason: str) -> None:
        """Rebuild every book from the database, the truth (ARCHITECTURE "Who owns what").

        Open orders are loaded in their original event sequence; orders still `Pending`
        and cancels still requested are then applied as commands. Commands queued before
        the rebuild are dropped: each is either in that database state already or was
        never committed, and keeping them would let an order finished before a crash run
        again (the engine forgets finished orders when it restarts).
        """
        from trading.models import Market, MarketState, Order
        from trading.services import place_message_for

        self.wait_for_db_processor()
        self.epoch = int(self.redis.incr(EPOCH_KEY))
        dropped = transport.queue_length(self.messages)
        self.redis.delete(self.messages.key)
        close_old_connections()

        engine = Engine()
        units: dict[str, MarketUnits] = {}
        orders: dict[int, _OrderInfo] = {}
        states = {state.market_id: state for state in MarketState.objects.all()}
        for market in Market.objects.all().order_by("pk"):
            state = states.get(market.pk)
            units[market.symbol] = MarketUnits(market.tick_size, market.lot_size)
            last_price = state.last_price if state else None
            reference = last_price if last_price is not None else market.reference_price
            engine.apply(
                AddMarket(
                    symbol=market.symbol, ts=0, status=market.status,
                    maker_fee_ppm=int(market.maker_fee_rate * 1_000_000),
                    taker_fee_ppm=int(market.taker_fee_rate * 1_000_000), band_bps=market.band_bps,
                    reference_price=int(reference / market.tick_size) if reference is not None else 0,
                    trade_id=state.last_trade_id if state else 0,
                    event_seq=state.last_event_seq if state else 0,
                    book_update_id=state.last_book_update_id if state else 0,
                )
            )
        resting = (
            Order.objects.filter(status__in=(Order.Status.NEW, Order.Status.PARTIALLY_FILLED))
            .select_related("market")
            .order_by("market_id", "accepted_seq", "pk")
        )
        loaded = 0
        for order in resting.iterator(chunk_size=5000):
            u = units[order.market.symbol]
            assert order.price is not None and order.quantity is not None
            price = int(order.price / u.tick)
            quantity = int(order.quantity / u.lot)
            engine.load_resting(
                order.market.symbol, order_id=order.pk, user_id=order.user_id, side=order.side, price=price,
                quantity=quantity, executed_qty=int(order.executed_quantity / u.lot),
                executed_quote=int(order.executed_quote_quantity / (u.tick * u.lot)),
                self_trade_prevention=order.self_trade_prevention, post_only=order.post_only,
                client_id=order.client_id,
            )
            orders[order.pk] = _OrderInfo(order.side, order.order_type, price, quantity, order.client_id)
            loaded += 1
        self.engine, self.units, self.orders = engine, units, orders
        # Books rebuilt; now replay what the database holds that the engine has not seen.
        pending = Order.objects.filter(status=Order.Status.PENDING).select_related("market").order_by("pk")
        replay: list[dict[str, Any]] = [place_message_for(order) for order in pending.iterator(chunk_size=5000)]
        cancels = Order.objects.filter(
            status__in=Order.OPEN_STATUSES, cancel_requested_at__isnull=False
        ).select_related("market").order_by("pk")
        replay += [
            {"kind": "cancel", "order_id": o.pk, "user_id": o.user_id, "symbol": o.market.symbol, "ts": _now_us()}
            for o in cancels
        ]
        close_old_connections()
        logger.info(
            "engine rebuilt (%s): epoch %d, %d markets, %d resting orders, %d commands replayed, %d queued dropped",
            reason, self.epoch, len(units), loaded, len(replay), dropped,
        )
        for start in range(0, len(replay), self.batch_size):
            self.consume(replay[start : start + self.batch_size], replayed=True)
        for symbol in self.units:
            self._write_depth(symbol)

    # --- one batch ------------------------------------------------------------------------

    def consume(self, batch: list[dict[str, Any]], *, replayed: bool = False) -> list[Event]:
        if not replayed:
            fault_point("engine.after_dequeue")
        events: list[Event] = []
        rebuild_reason = None
        dump_requested = False
        newest_ts = 0
        for message in batch:
            try:
                command = codec.decode_command(message)
            except (codec.BadCommand, KeyError, TypeError, ValueError):
                logger.exception("skipping a malformed command: %r", message)
                continue
            if command is None:
                if message["kind"] == "dump":
                    dump_requested = True
                elif int(message.get("epoch", self.epoch)) >= self.epoch:
                    rebuild_reason = str(message.get("reason", "requested"))
                continue
            newest_ts = max(newest_ts, command.ts)
            if isinstance(command, AddMarket):
                self._learn_market(command)
            events.extend(self.engine.apply(command))
        self._stats_commands += len(batch)
        if newest_ts:
            self._last_lag_ms = max(0.0, (time.time_ns() // 1000 - newest_ts) / 1000)
        if events:
            self.hand_on(events)
        if rebuild_reason is not None:
            self.rebuild(reason=rebuild_reason)
        if dump_requested:
            self.dump_books()
        return events

    def _learn_market(self, command: AddMarket) -> None:
        from trading.models import Market

        market = Market.objects.filter(symbol=command.symbol).first()
        close_old_connections()
        if market is not None:
            self.units[command.symbol] = MarketUnits(market.tick_size, market.lot_size)

    def hand_on(self, events: list[Event]) -> None:
        """Persist first (one db_processor job), then show: publish and depth snapshots."""
        transport.push_job(self.db_queue, transport.DB_JOB, {"epoch": self.epoch, "events": codec.encode_events(events)})
        fault_point("engine.after_enqueue")
        self._stats_events += len(events)
        touched = self.publish(events)
        for symbol in touched:
            self._write_depth(symbol)
        fault_point("engine.after_publish")

    # --- publishing -----------------------------------------------------------------------

    def publish(self, events: list[Event]) -> set[str]:
        """One Channels send per group for the batch. Returns the markets whose book changed."""
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        depth: dict[str, dict[str, Any]] = {}
        book_ticker: dict[str, BestBidAsk] = {}
        for event in events:
            symbol = event.symbol
            u = self.units.get(symbol)
            if u is None:
                continue
            if isinstance(event, Trade):
                groups[public_group("trade", symbol)].append({"stream": f"trade.{symbol}", "data": {
                    "e": "trade", "E": event.ts, "s": symbol, "t": event.trade_id, "p": u.price(event.price),
                    "q": u.qty(event.quantity), "m": event.taker_side == "Ask", "T": event.ts,
                    "b": event.taker_order_id if event.taker_side == "Bid" else event.maker_order_id,
                    "a": event.maker_order_id if event.taker_side == "Bid" else event.taker_order_id,
                }})
                self._order_fill(groups, u, event)
            elif isinstance(event, BookLevel):
                delta = depth.setdefault(symbol, {"U": event.book_update_id, "a": {}, "b": {}, "E": event.ts})
                delta["u"] = event.book_update_id
                delta["E"] = event.ts
                delta["b" if event.side == "Bid" else "a"][event.price] = event.quantity
            elif isinstance(event, BestBidAsk):
                book_ticker[symbol] = event
            elif isinstance(event, (OrderAccepted, OrderUpdate, OrderCancelled, OrderExpired, OrderRejected)):
                self._order_event(groups, u, event)
        for symbol, delta in depth.items():
            u = self.units[symbol]
            groups[public_group("depth", symbol)].append({"stream": f"depth.{symbol}", "data": {
                "e": "depth", "E": delta["E"], "s": symbol, "T": delta["E"], "U": delta["U"], "u": delta["u"],
                "a": [[u.price(p), u.qty(q)] for p, q in delta["a"].items()],
                "b": [[u.price(p), u.qty(q)] for p, q in delta["b"].items()],
            }})
        for symbol, top in book_ticker.items():
            u = self.units[symbol]
            groups[public_group("bookTicker", symbol)].append({"stream": f"bookTicker.{symbol}", "data": {
                "e": "bookTicker", "E": top.ts, "s": symbol, "u": top.book_update_id,
                "a": u.price(top.ask_price) if top.ask_price is not None else None, "A": u.qty(top.ask_qty),
                "b": u.price(top.bid_price) if top.bid_price is not None else None, "B": u.qty(top.bid_qty),
            }})
        if groups:
            self.publisher.send(groups)
        return set(depth) | set(book_ticker)

    def _order_payload(self, u: MarketUnits, symbol: str, order_id: int, ts: int) -> dict[str, Any]:
        info = self.orders.get(order_id)
        data: dict[str, Any] = {"E": ts, "s": symbol, "i": str(order_id)}
        if info is not None:
            data.update({
                "c": info.client_id, "S": info.side, "o": info.order_type,
                "p": u.price(info.price) if info.price else None,
                "q": u.qty(info.quantity) if info.quantity is not None else None,
            })
        return data

    def _order_fill(self, groups: dict[str, list[dict[str, Any]]], u: MarketUnits, trade: Trade) -> None:
        for order_id, user_id, is_maker in (
            (trade.maker_order_id, trade.maker_user_id, True),
            (trade.taker_order_id, trade.taker_user_id, False),
        ):
            data = self._order_payload(u, trade.symbol, order_id, trade.ts)
            data.update({"e": "orderFill", "l": u.qty(trade.quantity), "L": u.price(trade.price), "t": trade.trade_id,
                         "m": is_maker})
            groups[user_group(user_id)].append({"stream": "account.orderUpdate", "data": data})

    def _order_event(self, groups: dict[str, list[dict[str, Any]]], u: MarketUnits, event: Any) -> None:
        if isinstance(event, OrderAccepted):
            self.orders[event.order_id] = _OrderInfo(
                event.side, event.order_type, event.price, event.quantity, event.client_id
            )
            data = self._order_payload(u, event.symbol, event.order_id, event.ts)
            data.update({"e": "orderAccepted", "X": "New", "z": "0", "Z": "0"})
        elif isinstance(event, OrderRejected):
            if event.order_id is None or event.request != "place":
                return
            data = self._order_payload(u, event.symbol, event.order_id, event.ts)
            data.update({"e": "orderExpired", "X": "Expired", "z": "0", "Z": "0", "r": event.reason})
        else:
            name = {"Cancelled": "orderCancelled", "Expired": "orderExpired"}.get(event.status)
            if name is None:
                # New/PartiallyFilled/Filled after fills: the orderFill frames said it already,
                # but clients track status from X, so send the state too.
                name = "orderUpdate"
            data = self._order_payload(u, event.symbol, event.order_id, event.ts)
            data.update({"e": name, "X": event.status, "z": u.qty(event.executed_qty),
                         "Z": u.quote(event.executed_quote)})
            if event.status in ("Filled", "Cancelled", "Expired"):
                self.orders.pop(event.order_id, None)
        groups[user_group(event.user_id)].append({"stream": "account.orderUpdate", "data": data})

    def _write_depth(self, symbol: str) -> None:
        u = self.units.get(symbol)
        if u is None:
            return
        bids, asks, update_id = self.engine.depth(symbol, DEPTH_LEVELS)
        snapshot = {
            "bids": [[u.price(p), u.qty(q)] for p, q in bids],
            "asks": [[u.price(p), u.qty(q)] for p, q in asks],
            "lastUpdateId": str(update_id),
            "timestamp": _now_us(),
        }
        self.redis.set(depth_key(symbol), json.dumps(snapshot))

    def dump_books(self) -> None:
        """Write every book (live orders in priority order) and counters to Redis.

        For operators and the crash tests, which compare the engine's books with the open
        orders in the database. Requested with a `{"kind": "dump"}` message.
        """
        books = {}
        for symbol in self.engine.symbols():
            trade_id, seq, book_update_id = self.engine.counters(symbol)
            books[symbol] = {
                "counters": {"trade_id": trade_id, "event_seq": seq, "book_update_id": book_update_id},
                "orders": [
                    [o.order_id, o.side, o.price, o.remaining] for o in self.engine.open_orders(symbol)
                ],
            }
        self.redis.set(BOOKS_KEY, json.dumps({"epoch": self.epoch, "ts": _now_us(), "books": books}), ex=600)

    # --- observability --------------------------------------------------------------------

    def _log_stats(self) -> None:
        now = time.monotonic()
        elapsed = now - self._stats_at
        if elapsed < 10:
            return
        backlog = transport.queue_length(self.messages)
        self.redis.set(HEARTBEAT_KEY, json.dumps({"ts": _now_us(), "epoch": self.epoch, "backlog": backlog}), ex=60)
        if self._stats_commands:
            logger.info(
                "%.0f commands/s, %.0f events/s, queue lag %.1f ms, %d queued",
                self._stats_commands / elapsed, self._stats_events / elapsed, self._last_lag_ms, backlog,
            )
        self._stats_at, self._stats_commands, self._stats_events = now, 0, 0


# The pub/sub channel layer's name for a group's Redis channel (channels_redis 4.x,
# `RedisPubSubLoopLayer._get_group_channel_name`); the live-page tests fail if it changes.
_GROUP_CHANNEL = "{prefix}__group__{group}"


def _pipelined_target(layer: Any) -> tuple[Any, str] | None:
    """(Redis client, prefix) when Channels runs on one Redis server's pub/sub (Bourse's set-up),
    so a batch's sends can go in one pipeline; None for any other layer (sent one by one)."""
    from channels_redis.pubsub import RedisPubSubChannelLayer
    from django.conf import settings

    config = settings.CHANNEL_LAYERS.get("default", {}).get("CONFIG", {})
    hosts = config.get("hosts") or []
    if not isinstance(layer, RedisPubSubChannelLayer) or len(hosts) != 1 or not isinstance(hosts[0], str):
        return None
    import redis

    return redis.Redis.from_url(hosts[0]), config.get("prefix", "asgi")


class Publisher:
    """Sends a batch's messages to Channels groups, in engine order.

    On the Redis pub/sub layer with one server (Bourse's configuration) the batch's messages
    go as one pipeline of PUBLISHes, serialized by the layer itself: one round trip, where
    `group_send` made one per group from an event loop (a quarter of the engine's CPU under
    load went to those sends). With any other layer, from one long-lived event loop in a
    thread of its own (the layer keeps a connection per event loop; `async_to_sync` would
    make a loop and a connection per batch), each batch awaited before the next.
    """

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self._target = _pipelined_target(self.layer) if self.layer is not None else None
        self.loop: asyncio.AbstractEventLoop | None = None
        if self.layer is not None and self._target is None:
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name="channels-publisher", daemon=True)
            self.thread.start()

    def send(self, groups: dict[str, list[dict[str, Any]]]) -> None:
        if self.layer is None:
            return
        try:
            if self._target is not None:
                self._publish_pipelined(groups)
            else:
                assert self.loop is not None
                asyncio.run_coroutine_threadsafe(self._send_all(groups), self.loop).result(timeout=10)
        except Exception:  # noqa: BLE001 — a live page may miss a frame; the truth is persisted
            logger.exception("publishing to Channels failed")

    def _publish_pipelined(self, groups: dict[str, list[dict[str, Any]]]) -> None:
        assert self._target is not None and self.layer is not None
        client, prefix = self._target
        pipe = client.pipeline(transaction=False)
        for group, messages in groups.items():
            pipe.publish(_GROUP_CHANNEL.format(prefix=prefix, group=group), self.layer.serialize(_group_message(messages)))
        pipe.execute()

    async def _send_all(self, groups: dict[str, list[dict[str, Any]]]) -> None:
        assert self.layer is not None
        for group, messages in groups.items():
            await self.layer.group_send(group, _group_message(messages))

    def close(self) -> None:
        if self._target is not None:
            self._target[0].close()
        if self.loop is not None:
            if self.layer is not None:
                asyncio.run_coroutine_threadsafe(self.layer.flush(), self.loop).result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


def _group_message(messages: list[dict[str, Any]]) -> dict[str, Any]:
    if len(messages) == 1:
        return stream_message(messages[0]["stream"], messages[0]["data"])
    return {"type": "stream.batch", "messages": messages}


def send_groups(groups: dict[str, list[dict[str, Any]]], publisher: Publisher | None) -> None:
    """Send with the caller's long-lived publisher, or with a one-off one (an RQ job, a test)."""
    if not groups:
        return
    if publisher is not None:
        publisher.send(groups)
        return
    one_off = Publisher()
    try:
        one_off.send(groups)
    finally:
        one_off.close()


def _now_us() -> int:
    return time.time_ns() // 1000


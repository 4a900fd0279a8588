"""The WebSocket endpoint `/ws` (BOT_API.md "WebSocket"), Backpack's stream protocol.

Client → server: `{"method": "SUBSCRIBE" | "UNSUBSCRIBE", "params": [topics], "id"?,
"signature"?}`. Server → client: `{"stream": topic, "data": {...}}` per event; an answer
`{"id": <id>, "result": null}` to a request that carried an `id` (Binance's convention;
Backpack's clients ignore frames without `data` or `error`, and the ack is what lets a
client know its subscription is in place); errors `{"id": <id or null>, "error":
{"code": <int>, "message": "..."}}`, after which the connection stays open unless said.

Error codes:
    4000  malformed message: not JSON, not an object, unknown method, params not strings
    4001  a private topic without a session or a signature
    4003  signature rejected (bad key or signature, timestamp outside the window, or a
          second user on a connection already subscribed as someone else)
    4005  more than MAX_SUBSCRIPTIONS topics on one connection
    4006  invalid stream (Backpack's own code, as CCXT documents it); nothing from that
          request is subscribed
    4009  message larger than MAX_MESSAGE_BYTES; the connection is then closed (1009)

Public topics map one-to-one onto channel groups. Private topics share the user's group
(`user.<id>`): the consumer joins it once and filters what arrives by the topics the
client chose, so `account.orderUpdate.AAPL_USD` gets only AAPL_USD's order updates.
Every frame sent is checked against the connection's current subscriptions, so an
UNSUBSCRIBE takes effect at once even for messages already on their way.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from marketdata import realtime
from marketdata.ws_auth import SignatureRejected, verify_subscription

MAX_SUBSCRIPTIONS = 100
MAX_MESSAGE_BYTES = 64 * 1024

ERR_MALFORMED = 4000
ERR_UNAUTHORIZED = 4001
ERR_SIGNATURE = 4003
ERR_TOO_MANY_SUBSCRIPTIONS = 4005
ERR_INVALID_STREAM = 4006
ERR_TOO_LARGE = 4009
# RFC 6455: "message too big".
CLOSE_TOO_LARGE = 1009


class StreamConsumer(AsyncJsonWebsocketConsumer):
    """One client connection: its public topics, its private topics and whose they are."""

    public_topics: set[str]
    private_topics: set[str]
    user_id: int | None

    async def connect(self) -> None:
        self.public_topics = set()
        self.private_topics = set()
        self.user_id = None
        await self.accept()

    async def disconnect(self, code: int) -> None:
        layer = self.channel_layer
        if layer is None:
            return
        for topic in self.public_topics:
            await layer.group_discard(topic, self.channel_name)
        if self.private_topics and self.user_id is not None:
            await layer.group_discard(realtime.user_group(self.user_id), self.channel_name)
        self.public_topics = set()
        self.private_topics = set()

    # --- client → server ------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        raw = text_data.encode() if text_data is not None else (bytes_data or b"")
        if len(raw) > MAX_MESSAGE_BYTES:
            await self._error(None, ERR_TOO_LARGE, f"Messages are limited to {MAX_MESSAGE_BYTES} bytes.")
            await self.close(code=CLOSE_TOO_LARGE)
            return
        try:
            content = json.loads(raw)
        except ValueError:
            await self._error(None, ERR_MALFORMED, "Messages must be JSON objects.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self._error(None, ERR_MALFORMED, "Messages must be JSON objects.")
            return
        request_id = content.get("id")
        method = content.get("method")
        params = content.get("params")
        if not isinstance(method, str) or method.upper() not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            await self._error(request_id, ERR_MALFORMED, '"method" must be "SUBSCRIBE" or "UNSUBSCRIBE".')
            return
        if not isinstance(params, list) or not params or not all(isinstance(topic, str) for topic in params):
            await self._error(request_id, ERR_MALFORMED, '"params" must be a non-empty list of topic names.')
            return
        topics = list(dict.fromkeys(params))
        if method.upper() == "SUBSCRIBE":
            done = await self._subscribe(topics, content)
        else:
            done = await self._unsubscribe(topics)
        if done and request_id is not None:
            await self.send_json({"id": request_id, "result": None})

    async def _subscribe(self, topics: list[str], content: dict[str, Any]) -> bool:
        public = [topic for topic in topics if realtime.parse_public_topic(topic)]
        private = [topic for topic in topics if realtime.parse_private_topic(topic)]
        valid = set(public) | set(private)
        invalid = [topic for topic in topics if topic not in valid]
        if invalid:
            shown = ", ".join(topic[:64] for topic in invalid[:10])
            await self._error(content.get("id"), ERR_INVALID_STREAM, f"Invalid stream: {shown}.")
            return False
        wanted = self.public_topics | self.private_topics | valid
        if len(wanted) > MAX_SUBSCRIPTIONS:
            await self._error(
                content.get("id"),
                ERR_TOO_MANY_SUBSCRIPTIONS,
                f"At most {MAX_SUBSCRIPTIONS} subscriptions per connection.",
            )
            return False
        if private:
            user_id = await self._authenticate(content)
            if user_id is None:
                return False
            if not self.private_topics:
                await self.channel_layer.group_add(realtime.user_group(user_id), self.channel_name)
            self.private_topics.update(private)
        for topic in public:
            if topic not in self.public_topics:
                await self.channel_layer.group_add(topic, self.channel_name)
                self.public_topics.add(topic)
        return True

    async def _unsubscribe(self, topics: list[str]) -> bool:
        # Topics never subscribed (or not topics at all) are ignored: the end state is the
        # one the client asked for.
        for topic in topics:
            if topic in self.public_topics:
                self.public_topics.discard(topic)
                await self.channel_layer.group_discard(topic, self.channel_name)
        had_private = bool(self.private_topics)
        self.private_topics.difference_update(topics)
        if had_private and not self.private_topics and self.user_id is not None:
            await self.channel_layer.group_discard(realtime.user_group(self.user_id), self.channel_name)
        return True

    async def _authenticate(self, content: dict[str, Any]) -> int | None:
        """The user this private subscription is for, or None once an error frame is sent.

        A signature wins over the browser session; a connection already authenticated
        keeps its user, and may not switch to another (one user group per connection).
        """
        signature = content.get("signature")
        user = self.scope.get("user")
        if signature is not None:
            try:
                api_key = await database_sync_to_async(verify_subscription)(signature)
            except SignatureRejected as exc:
                await self._error(content.get("id"), ERR_SIGNATURE, str(exc))
                return None
            user_id: int = api_key.user_id
        elif user is not None and user.is_authenticated:
            user_id = user.pk
        elif self.user_id is not None:
            user_id = self.user_id
        else:
            await self._error(
                content.get("id"), ERR_UNAUTHORIZED, "Private streams need a signature or a logged-in session."
            )
            return None
        if self.user_id is not None and user_id != self.user_id:
            await self._error(content.get("id"), ERR_SIGNATURE, "This connection is subscribed as another user.")
            return None
        self.user_id = user_id
        return user_id

    async def _error(self, request_id: Any, code: int, message: str) -> None:
        await self.send_json({"id": request_id, "error": {"code": code, "message": message}})

    # --- channel layer → client -----------------------------------------------------------

    async def stream_message(self, event: dict[str, Any]) -> None:
        await self._deliver(event["stream"], event["data"])

    async def stream_batch(self, event: dict[str, Any]) -> None:
        for message in event["messages"]:
            await self._deliver(message["stream"], message["data"])

    async def _deliver(self, stream: str, data: dict[str, Any]) -> None:
        if stream in self.public_topics:
            await self.send_json({"stream": stream, "data": data})
            return
        parsed = realtime.parse_private_topic(stream)
        if parsed is None or not self.private_topics:
            return
        base, symbol = parsed
        symbol = symbol or (data.get("s") if isinstance(data.get("s"), str) else None)
        # A client subscribed to both the bare and the per-market topic asked for both.
        for topic in (base, f"{base}.{symbol}" if symbol else None):
            if topic is not None and topic in self.private_topics:
                await self.send_json({"stream": topic, "data": data})

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=(",", ":"))

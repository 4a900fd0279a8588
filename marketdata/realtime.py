"""Channel group names, built in one place (STYLE.md 12), and the stream message shape.

Groups are per topic: `trade.AAPL_USD`, `depth.AAPL_USD`, `bookTicker.AAPL_USD`,
`ticker.AAPL_USD`, `kline.1m.AAPL_USD`, and `user.42` for one user's private streams.
Channels group names allow only ASCII letters, digits, hyphens, underscores and periods,
which the symbols and topics already are.
"""

from __future__ import annotations

import re
from typing import Any

PUBLIC_TOPICS = ("trade", "depth", "ticker", "bookTicker")
KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1month")
PRIVATE_TOPICS = ("account.orderUpdate", "account.balanceUpdate")
_SYMBOL = re.compile(r"^[A-Z0-9]{1,16}_[A-Z0-9]{1,16}$")
_KIND = re.compile(r"^[A-Za-z]{1,32}$")


def public_group(topic: str, symbol: str) -> str:
    return f"{topic}.{symbol}"


def kline_group(interval: str, symbol: str) -> str:
    return f"kline.{interval}.{symbol}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def stream_message(stream: str, data: dict[str, Any]) -> dict[str, Any]:
    """The Channels message a consumer forwards as `{"stream": ..., "data": ...}`.

    For a user's group the stream is `account.orderUpdate` (or `account.balanceUpdate`);
    the consumer routes order updates to `account.orderUpdate.<SYMBOL>` subscribers by
    `data["s"]`, so publishers need not know which spelling each client chose.
    """
    return {"type": "stream.message", "stream": stream, "data": data}


def stream_batch(messages: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One Channels message carrying many `(stream, data)` events for one group, in order.

    The engine sends one group message per group per batch; the consumer unpacks it into
    one frame per event.
    """
    return {"type": "stream.batch", "messages": [{"stream": stream, "data": data} for stream, data in messages]}


def parse_private_topic(topic: str) -> tuple[str, str | None] | None:
    """`("account.<kind>", symbol or None)` for a private topic, or None if it is not one.

    Any `account.<kind>` is accepted (BOT_API.md: unknown private topics are accepted
    silently), optionally narrowed to one market as `account.<kind>.<SYMBOL>`.
    """
    parts = topic.split(".")
    if parts[0] != "account" or len(parts) not in (2, 3) or not _KIND.match(parts[1]):
        return None
    if len(parts) == 2:
        return topic, None
    if not _SYMBOL.match(parts[2]):
        return None
    return f"account.{parts[1]}", parts[2]


def parse_public_topic(topic: str) -> str | None:
    """The group for a public topic a client may subscribe to, or None if it is not one."""
    parts = topic.split(".")
    if len(parts) == 2 and parts[0] in PUBLIC_TOPICS and _SYMBOL.match(parts[1]):
        return topic
    if len(parts) == 3 and parts[0] == "kline" and parts[1] in KLINE_INTERVALS and _SYMBOL.match(parts[2]):
        return topic
    return None

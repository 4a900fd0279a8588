"""Listening on a Channels group from a test, through the real Redis pub/sub layer."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from channels.layers import get_channel_layer


class GroupListener:
    """Joins a Channels group from its own event loop (the pub/sub layer is per loop) and
    keeps every frame that reaches it until `window` seconds pass without one."""

    def __init__(self, group: str, *, window: float = 0.5, first: float = 10) -> None:
        self.group = group
        self.window = window
        self.first = first
        self.ready = threading.Event()
        self.messages: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)
        self.thread.start()
        assert self.ready.wait(5), "listener did not join the group"

    async def _listen(self) -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self.ready.set()
        try:
            # The first frame may take a while; after it, stop once the group falls quiet.
            self.messages.append(await asyncio.wait_for(layer.receive(channel), timeout=self.first))
            while True:
                self.messages.append(await asyncio.wait_for(layer.receive(channel), timeout=self.window))
        except TimeoutError:
            pass
        finally:
            await layer.group_discard(self.group, channel)
            await layer.flush()

    def result(self, timeout: float = 15) -> dict[str, Any]:
        """The first channel message that reached the group, as sent."""
        self.thread.join(timeout)
        assert self.messages, f"nothing reached {self.group}"
        return self.messages[0]

    def frames(self, timeout: float = 15) -> list[dict[str, Any]]:
        """Each frame as the consumer would forward it: `{"stream", "data"}`."""
        self.thread.join(timeout)
        assert self.messages, f"nothing reached {self.group}"
        out: list[dict[str, Any]] = []
        for message in self.messages:
            if message["type"] == "stream.batch":
                out += message["messages"]
            else:
                out.append({"stream": message["stream"], "data": message["data"]})
        return out

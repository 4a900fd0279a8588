"""Django's ASGI handler, cheaper per request for Bourse's all-sync views and middleware.

Two costs of Django's own ASGIHandler under daphne, both measured with py-spy on order POSTs:

- It builds the middleware chain in async mode, so a request went event loop → thread (the
  sync middleware) → event loop (`_get_response_async`) → thread again (the view) and back
  twice. Here the whole sync chain (middleware, view, exception handling — exactly what
  WSGI runs) is called in the request's thread-sensitive thread in one go. Async views
  would still work (Django adapts them), only without this saving.
- Each request's `ThreadSensitiveContext` made a new one-thread executor, so a new OS
  thread, and on exit another thread to join it: two thread starts per request. Here the
  request's context is given an executor from a small free list instead (asgiref's
  supported `ThreadSensitiveContext(executor=...)`), returned when the request is over
  and its thread idle. One request at a time uses an executor, as before; its thread
  only outlives the request. The thread-local database connection is closed at
  `request_finished` as before (returned to the pool), so nothing carries over.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponseBase

# Idle executors kept; more requests at once than this still work, with fresh threads.
MAX_IDLE_EXECUTORS = 32


class _RequestExecutor(ThreadPoolExecutor):
    """One worker thread; knows whether everything submitted has finished."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="django-request")
        self._last: Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self._last = future  # one worker, FIFO: when the last is done, all are
        return future

    def idle(self) -> bool:
        return self._last is None or self._last.done()


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.load_middleware(is_async=False)
        self._idle: list[_RequestExecutor] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else _RequestExecutor()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # A request cut short (client gone) may leave its view running: that thread
            # finishes it and ends; it is not handed to another request.
            if executor.idle() and len(self._idle) < MAX_IDLE_EXECUTORS:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response: Any = await sync_to_async(BaseHandler.get_response, thread_sensitive=True)(self, request)
        return response

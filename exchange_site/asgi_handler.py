"""Django's ASGI handler, cheaper per request for Bourse's all-sync views and middleware.

Three costs of Django's own ASGIHandler under daphne, each measured on order POSTs (py-spy,
and the bench's daphne CPU per request: 3.7 → 3.1 ms for the third):

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
- Around the view, Django's `handle` hops to a thread twice more (the sync receivers of
  `request_started`, and `response.close()` for `request_finished`) and runs two tasks
  (the view and a disconnect listener). Here the request's whole sync life — started
  signal, request object, middleware and view, and for an in-memory response its close —
  is one call in the request's thread; the event loop only reads the body and sends the
  answer. The disconnect listener goes: it can cancel an async view, but a sync view in
  a thread runs to its end anyway, and daphne drops what is sent to a closed connection.
  A streaming response (static files) is closed after it is sent, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

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

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:
                    await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        """What WSGI runs for a request, in the request's thread (see the module docstring)."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = BaseHandler.get_response(self, request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        assert response is not None
        if not response.streaming:
            # The content is in memory: finish the request (request_finished gives the
            # database connection back to the pool) before the bytes go out.
            response.close()
        return response

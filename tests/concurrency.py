"""Run one action from many threads at once, each on its own database connection.

For the acceptance tests that race requests against the same rows (whole-balance
withdrawals and orders, idempotent retries, clientId races): a barrier releases the threads
together so they really contend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def run_together(action: Callable[[int], T], count: int, *, timeout: float = 60) -> list[T | Exception]:
    """`action(i)` for i in range(count), all released at once; what each returned or raised.

    Each thread closes its database connection when done. Fails the test if a thread is
    still running after `timeout` seconds (a deadlock or a hung request).
    """
    barrier = threading.Barrier(count)
    results: list[T | Exception] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            result: T | Exception = action(index)
        except Exception as exc:  # noqa: BLE001 - every outcome is returned and asserted on
            result = exc
        finally:
            connection.close()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a request hung (deadlock?)"
    return results

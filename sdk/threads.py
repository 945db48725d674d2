"""Carry the current OTel context into threads, as asyncio already does for tasks.

Without this, a span started in a `threading.Thread` or a `ThreadPoolExecutor` job has no
parent and starts a trace of its own.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_patched = False


def propagate_context_to_threads() -> None:
    """Patch Thread and ThreadPoolExecutor once per process to run work in the caller's context."""
    global _patched
    if _patched:
        return
    _patched = True
    thread_start = threading.Thread.start
    pool_submit = ThreadPoolExecutor.submit

    @functools.wraps(thread_start)
    def start(self: threading.Thread) -> None:
        # An instance attribute, so subclasses that override run() are covered too.
        self.run = functools.partial(contextvars.copy_context().run, self.run)  # type: ignore[method-assign]
        thread_start(self)

    def submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        return pool_submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

    threading.Thread.start = start  # type: ignore[method-assign]
    ThreadPoolExecutor.submit = submit  # type: ignore[assignment]

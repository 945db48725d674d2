"""A token bucket: what bounds how often an untrusted caller may make us do work."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; thread-safe."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._at = float(burst), time.monotonic()
        self._lock = threading.Lock()

    def take(self, cost: float = 1.0) -> bool:
        """Take `cost` tokens if there are that many."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < cost:
                return False
            self._tokens -= cost
            return True

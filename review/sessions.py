"""Reviewers' sessions: signing in trades a review key for a random token that expires. The
store keeps the token's SHA-256 and the key it stands for, so every collector honours it and
neither the cookie nor a row of the table is a key; revoking the key ends its sessions."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from driftline.review import tables
from driftline.store import Store
from driftline.store.buckets import TokenBucket
from driftline.store.keys import Principal

_MAX_TOKEN = 128
_CACHED = 10_000  # sessions held in memory; the store has them all


@dataclass(frozen=True)
class _Known:
    key_id: str
    expires: float
    read_at: float


class Sessions:
    """Sessions `lifetime` seconds long, re-read from the store every `recheck` seconds (so
    signing out on one collector ends the session on all); tokens the memory lacks cost a
    store lookup, at most `lookups_per_second` of them."""

    def __init__(
        self,
        store: Store,
        lifetime: float,
        recheck: float = 30.0,
        lookups_per_second: float = 20.0,
    ) -> None:
        self.store, self.lifetime, self.recheck = store, lifetime, recheck
        self._known: dict[str, _Known] = {}
        self._misses = TokenBucket(lookups_per_second, lookups_per_second)

    def start(self, principal: Principal) -> str:
        """A new session for the key: its token, for the cookie."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        self._save(_sha256(token), principal, now + self.lifetime, ended=False)
        self._remember(_sha256(token), _Known(principal.key_id, now + self.lifetime, now))
        return token

    def key_id(self, token: str) -> str | None:
        """The key a live session stands for; None for an unknown, ended or expired one."""
        if not token.isascii() or len(token) > _MAX_TOKEN:
            return None
        digest, now = _sha256(token), time.time()
        known = self._known.get(digest)
        if known is None and not self._misses.take():
            return None
        if known is None or now - known.read_at >= self.recheck:
            row = tables.session_row(self.store, digest)
            if row is None or row["ended"]:
                self._known.pop(digest, None)
                return None
            known = _Known(row["key_id"], row["expires_ms"] / 1000, now)
            self._remember(digest, known)
        return known.key_id if now < known.expires else None

    def end(self, token: str, principal: Principal) -> None:
        """Sign out: the session ends on every collector within `recheck` seconds."""
        digest = _sha256(token)
        self._known.pop(digest, None)
        self._save(digest, principal, time.time(), ended=True)

    def _save(self, digest: str, principal: Principal, expires: float, ended: bool) -> None:
        tables.insert_session(
            self.store,
            {
                "token_sha256": [digest],
                "project_id": [principal.project or ""],
                "key_id": [principal.key_id],
                "expires_at": [round(expires * 1000)],
                "ended": [int(ended)],
                "updated_at": [round(time.time() * 1000)],
            },
        )

    def _remember(self, digest: str, known: _Known) -> None:
        self._known[digest] = known
        while len(self._known) > _CACHED:  # the oldest first: dicts keep insertion order
            self._known.pop(next(iter(self._known)))


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

"""Projects and API keys: created, listed, revoked and checked. Only SHA-256 hashes are stored."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from driftline.store.base import Store
from driftline.store.buckets import TokenBucket
from driftline.store.migrations import Migration

_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY = re.compile(r"^dl_([0-9a-f]{12})_([0-9a-f]{40})$")

_PROJECTS = """
CREATE TABLE IF NOT EXISTS projects (
    project_id String,
    created_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY project_id"""


# A revocation is a newer version of the key's row; reads take the latest with FINAL.
_API_KEYS = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id String,
    project_id String,
    role LowCardinality(String),
    secret_sha256 FixedString(64),
    name String,
    created_at DateTime64(3, 'UTC'),
    revoked UInt8,
    revoked_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY key_id"""

MIGRATIONS = (Migration(1, "projects and api keys", (_PROJECTS, _API_KEYS)),)


class Role(StrEnum):
    INGEST = "ingest"
    READ = "read"
    REVIEW = "review"  # the review UI: the project's queue and judgements
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        return self is Role.ADMIN or self is needed


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for: a key of one project (or the local operator, project None)."""

    key_id: str
    project: str | None
    role: Role
    name: str = ""  # the key's note: a reviewer's name for review keys


class KeysError(ValueError):
    """A project name, role or key id that cannot be used; the message says why."""


def check_project(name: str) -> str:
    if not _PROJECT.match(name):
        raise KeysError(
            f"project name {name!r} must be 1-63 characters of a-z, 0-9, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise KeysError(f"role {role!r} is not one of ingest, read, review, admin") from None


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_project(store: Store, project: str) -> bool:
    """Create the project if missing; True when it was created."""
    check_project(project)
    if store.query("SELECT 1 FROM projects FINAL WHERE project_id = {p:String}", {"p": project}):
        return False
    store.command("INSERT INTO projects (project_id) VALUES ({p:String})", {"p": project})
    return True


def create_key(store: Store, project: str, role: str, name: str = "") -> tuple[str, str]:
    """A new key for the project (created if missing); returns (key_id, the key itself)."""
    ensure_project(store, project)
    checked = check_role(role)
    key_id, secret = secrets.token_hex(6), secrets.token_hex(20)
    store.command(
        "INSERT INTO api_keys (key_id, project_id, role, secret_sha256, name, created_at, revoked,"
        " version) VALUES ({k:String}, {p:String}, {r:String}, {h:String}, {n:String}, now64(3),"
        " 0, 1)",
        {"k": key_id, "p": project, "r": checked.value, "h": _sha256(secret), "n": name},
    )
    return key_id, f"dl_{key_id}_{secret}"


def list_keys(store: Store, project: str | None = None) -> list[dict[str, Any]]:
    where = "WHERE project_id = {p:String}" if project else ""
    rows = store.query(
        "SELECT key_id, project_id, role, name, created_at, revoked, revoked_at "
        f"FROM api_keys FINAL {where} ORDER BY project_id, created_at",
        {"p": project} if project else None,
    )
    for row in rows:
        row["revoked"] = bool(row["revoked"])
        for field in ("created_at", "revoked_at"):
            if row[field] is not None:
                row[field] = row[field].isoformat()
    return rows


def revoke_key(store: Store, key_id: str, project: str | None = None) -> dict[str, Any]:
    """Revoke a key (only within `project` when given); returns its row, raises if unknown."""
    rows = store.query(
        "SELECT key_id, project_id, role, secret_sha256, name, created_at, revoked, version "
        "FROM api_keys FINAL WHERE key_id = {k:String}",
        {"k": key_id},
    )
    if not rows or (project is not None and rows[0]["project_id"] != project):
        raise KeysError(f"no key with id {key_id!r}")
    row = rows[0]
    if not row["revoked"]:
        store.command(
            "INSERT INTO api_keys (key_id, project_id, role, secret_sha256, name, created_at, "
            "revoked, revoked_at, version) SELECT key_id, project_id, role, secret_sha256, name, "
            "created_at, 1, now64(3), version + 1 FROM api_keys FINAL WHERE key_id = {k:String}",
            {"k": key_id},
        )
    return {"key_id": key_id, "project_id": row["project_id"], "role": row["role"], "revoked": True}


def has_keys(store: Store, project: str) -> bool:
    return bool(
        store.query(
            "SELECT 1 FROM api_keys FINAL WHERE project_id = {p:String} LIMIT 1", {"p": project}
        )
    )


class KeyChecker:
    """Checks presented keys against every key of the store, held in memory and read again
    every `ttl` seconds; so an unknown key costs no query. A key the table lacks may be newer
    than the last read (made by another process): it is looked up in the store, at most
    `lookups_per_second` such lookups overall, so unknown keys cannot flood the store."""

    def __init__(
        self,
        store: Store,
        ttl: float,
        operator_token: str | None = None,
        lookups_per_second: float = 20.0,
    ) -> None:
        self.store, self.ttl = store, ttl
        self._operator_token = operator_token
        self._rows: dict[str, dict[str, Any]] = {}
        self._read_at = -math.inf
        self._misses = TokenBucket(lookups_per_second, lookups_per_second)
        self._lock = threading.Lock()

    def check(self, presented: str) -> Principal | None:
        if not presented.isascii():  # compare_digest refuses non-ASCII text; no key is
            return None
        if self._operator_token and hmac.compare_digest(presented, self._operator_token):
            return Principal("operator", None, Role.ADMIN)
        match = _KEY.match(presented)
        if not match:
            return None
        key_id, secret = match.groups()
        row = self._lookup(key_id)
        if row is None or not hmac.compare_digest(row["secret_sha256"], _sha256(secret)):
            return None
        return _principal(key_id, row)

    def by_id(self, key_id: str) -> Principal | None:
        """The principal of a key already proven (a review session's): None once revoked."""
        return _principal(key_id, self._lookup(key_id))

    def _lookup(self, key_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at >= self.ttl:
                self._rows = {row.pop("key_id"): row for row in self.store.query(_ALL_KEYS)}
                self._read_at = now
            row = self._rows.get(key_id)
            if row is not None or not self._misses.take():
                return row
        rows = self.store.query(_ALL_KEYS + " WHERE key_id = {k:String}", {"k": key_id})
        if not rows:
            return None
        found = rows[0]
        found.pop("key_id")
        with self._lock:
            self._rows[key_id] = found
        return found


def _principal(key_id: str, row: dict[str, Any] | None) -> Principal | None:
    if row is None or row["revoked"]:
        return None
    return Principal(key_id, row["project_id"], Role(row["role"]), row["name"])


_ALL_KEYS = "SELECT key_id, project_id, role, secret_sha256, revoked, name FROM api_keys FINAL"

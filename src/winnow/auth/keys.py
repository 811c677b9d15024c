"""API keys: random 256-bit secrets, stored only as SHA-256, verified through a short-lived cache.

Keys carry 256 bits of entropy, so a fast hash is the right tool (as GitHub and Stripe do);
a slow password hash would only add latency to every request. Verified keys are cached in
process for ``cache_ttl_s`` so the request path makes no database round trip; a revocation in
this process takes effect at once, in other processes within the TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from limits import parse_many
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from winnow.db import ApiKey, Database
from winnow.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound
from winnow.schemas.keys import RATE_CLASSES, KeyBudget, KeyCreated, KeyInfo

KEY_PREFIX = "wn-"
_SECRET_BYTES = 32
_NEGATIVE_CACHE_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as the request path sees it."""

    id: int
    name: str
    is_admin: bool
    rate_limits: dict[str, str] = field(default_factory=dict)
    # A stable, non-secret id (hash prefix) that names the key in counters shared across
    # deployments (e.g. one Redis); database ids restart at 1 in every database.
    key_id: str = ""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _looks_like_key(secret: str) -> bool:
    return secret.startswith(KEY_PREFIX) and 20 <= len(secret) <= 128 and secret.isascii()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        admin=row.is_admin,
        rate_limits=row.rate_limits,
        budget=budget_of(row),
        storage_quota_bytes=row.storage_quota_bytes,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def budget_of(row: ApiKey) -> KeyBudget | None:
    if row.budget_usd is None and row.budget_tokens is None:
        return None
    return KeyBudget.model_validate(
        {"usd": row.budget_usd, "tokens": row.budget_tokens, "period": row.budget_period or "month"}
    )


def validate_rate_limits(overrides: dict[str, str] | None) -> dict[str, str] | None:
    if not overrides:
        return None
    for klass, limit in overrides.items():
        if klass not in RATE_CLASSES:
            raise InvalidRequest("Unknown rate-limit class", f"{klass!r}; expected one of {RATE_CLASSES}")
        try:
            parse_many(limit)
        except ValueError as exc:
            raise InvalidRequest("Invalid rate limit", f"{klass}: {limit!r} ({exc})") from exc
    return dict(overrides)


class KeyService:
    """Create, list, revoke and verify API keys; the CLI and the HTTP routes both use it."""

    def __init__(self, db: Database, cache_ttl_s: float = 5.0) -> None:
        self.db = db
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        name: str,
        *,
        admin: bool = False,
        rate_limits: dict[str, str] | None = None,
        budget: KeyBudget | None = None,
        storage_quota_bytes: int | None = None,
    ) -> KeyCreated:
        secret = KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
        row = ApiKey(
            name=name,
            key_hash=hash_key(secret),
            prefix=secret[: len(KEY_PREFIX) + 6],
            is_admin=admin,
            rate_limits=validate_rate_limits(rate_limits),
            budget_usd=budget.usd if budget else None,
            budget_tokens=budget.tokens if budget else None,
            budget_period=budget.period if budget else None,
            storage_quota_bytes=storage_quota_bytes,
            created_at=datetime.now(UTC),
        )
        try:
            with self.db.session() as session:
                session.add(row)
                session.flush()
                info = _info(row)
        except IntegrityError as exc:
            raise Conflict("A live key with this name already exists", f"name={name!r}") from exc
        return KeyCreated(**info.model_dump(), key=secret)

    def list(self, *, include_revoked: bool = False) -> list[KeyInfo]:
        with self.db.session() as session:
            query = select(ApiKey).order_by(ApiKey.id)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return [_info(row) for row in session.scalars(query)]

    def set_budget(self, name: str, budget: KeyBudget | None) -> KeyInfo:
        """Set (or with None, clear) a live key's budget."""
        with self.db.session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))).first()
            if row is None:
                raise NotFound("No live key with this name", f"name={name!r}")
            row.budget_usd = budget.usd if budget else None
            row.budget_tokens = budget.tokens if budget else None
            row.budget_period = budget.period if budget else None
            return _info(row)

    def set_storage_quota(self, name: str, quota_bytes: int | None) -> KeyInfo:
        """Set (or with None, clear: the server's default applies) a live key's upload quota."""
        with self.db.session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))).first()
            if row is None:
                raise NotFound("No live key with this name", f"name={name!r}")
            row.storage_quota_bytes = quota_bytes
            return _info(row)

    def revoke(self, name: str) -> KeyInfo:
        """Revoke the live key called ``name``; Conflict when it is the last live admin key (nothing
        but direct database access could create keys again)."""
        with self.db.session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))).first()
            if row is None:
                raise NotFound("No live key with this name", f"name={name!r}")
            if row.is_admin:
                # Locks the live admin rows (PostgreSQL), so two revocations cannot each leave the other.
                live_admins = select(ApiKey.id).where(ApiKey.is_admin.is_(True), ApiKey.revoked_at.is_(None))
                if len(session.scalars(live_admins.with_for_update()).all()) <= 1:
                    raise Conflict(
                        "Refusing to revoke the last active admin key",
                        f"{name!r} is the only live admin key; create another admin key first "
                        "(`winnow keys create NAME --admin` on the server, or POST /api/v1/keys with admin: true), "
                        "then revoke this one",
                    )
            row.revoked_at = datetime.now(UTC)
            info = _info(row)
            key_hash = row.key_hash
        with self._lock:
            self._cache.pop(key_hash, None)
        return info

    def from_cache(self, secret: str) -> Principal | None:
        """The cached Principal; AuthenticationFailed when malformed or cached as bad; None on a miss."""
        if not _looks_like_key(secret):
            raise AuthenticationFailed("Malformed API key")
        entry = self._cache.get(hash_key(secret))
        if entry is None or entry[0] < time.monotonic():
            return None
        if entry[1] is None:
            raise AuthenticationFailed("Unknown or revoked API key")
        return entry[1]

    def authenticate(self, secret: str) -> Principal:
        """The key's Principal, or AuthenticationFailed. Blocking on a cache miss (one query)."""
        if not _looks_like_key(secret):
            raise AuthenticationFailed("Malformed API key")
        digest = hash_key(secret)
        entry = self._cache.get(digest)
        if entry is None or entry[0] < time.monotonic():
            entry = (time.monotonic() + self.cache_ttl_s, self._lookup(digest))
            with self._lock:
                if len(self._cache) >= _NEGATIVE_CACHE_MAX:
                    self._cache.clear()
                self._cache[digest] = entry
        if entry[1] is None:
            raise AuthenticationFailed("Unknown or revoked API key")
        return entry[1]

    def _lookup(self, digest: str) -> Principal | None:
        with self.db.session() as session:
            row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.key_hash, digest):
                return None
            return Principal(row.id, row.name, row.is_admin, dict(row.rate_limits or {}), digest[:20])

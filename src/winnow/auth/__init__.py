"""Who may call: API keys (hashed, revocable), per-key rate limits."""

from winnow.auth.keys import KeyService, Principal
from winnow.auth.ratelimit import RateLimiter, RateLimitState

__all__ = ["KeyService", "Principal", "RateLimitState", "RateLimiter"]

"""Identifiers made on the request path (request ids, generation and completion ids).

``uuid.uuid4()`` reads ``os.urandom``, a system call during which Python lets go of the GIL; in a
busy server another thread (a local model's inference loop, the usage flusher) then holds the GIL
for up to the interpreter's switch interval (5 ms) before the event loop gets it back, and that
wait lands on the request. These ids must be unique, not secret (ownership is checked on every
use), so they come from a PRNG seeded once per process from ``os.urandom`` (and again in a forked
child): 128 random bits, as many as a UUID4 carries, with no system call.
"""

from __future__ import annotations

import os
import random

_rng = random.Random(int.from_bytes(os.urandom(32), "big"))


def _reseed() -> None:
    _rng.seed(int.from_bytes(os.urandom(32), "big"))


os.register_at_fork(after_in_child=_reseed)


def hex_id() -> str:
    """32 hex digits (128 random bits), like ``uuid.uuid4().hex``."""
    return f"{_rng.getrandbits(128):032x}"

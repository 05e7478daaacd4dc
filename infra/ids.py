"""Identifiers: UUIDv7-style (time-ordered), so new rows land at the end of indexes."""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> uuid.UUID:
    """A random UUID whose first 48 bits are the Unix time in milliseconds (RFC 9562 v7)."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b
    return uuid.UUID(int=value)

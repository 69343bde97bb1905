"""Encryption keys as configured: `kid:base64key` entries, parsed without touching any secret.

A leaf module: the settings validate HOOKSTREAM_ENCRYPTION_KEY with it and `secrets` builds
its key ring from it, so neither has to import the other.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets as _random

KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    """`kid:base64key[,kid:base64key...]` as (kid, key) pairs; the first is the active key.

    Errors name the entry by position and key id only, never the key material.
    """
    keys: list[tuple[str, bytes]] = []
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise ValueError("expected kid:base64key entries, got nothing")
    for number, entry in enumerate(entries, 1):
        kid, sep, encoded = entry.partition(":")
        kid = kid.strip()
        if not sep:
            raise ValueError(f"entry {number} is not kid:base64key")
        if not _KEY_ID.fullmatch(kid):
            raise ValueError(
                f"entry {number}: the key id must be 1-64 of A-Z a-z 0-9 _ . - (no ':' or spaces)"
            )
        key = _decode_key(encoded.strip())
        if key is None:
            raise ValueError(f"key {kid!r} is not base64")
        if len(key) != KEY_BYTES:
            raise ValueError(f"key {kid!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        if kid in (known for known, _ in keys):
            raise ValueError(f"key id {kid!r} appears twice")
        keys.append((kid, key))
    return keys


def _decode_key(encoded: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional."""
    normalized = encoded.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def generate_key(kid: str) -> str:
    """A fresh `kid:base64key` entry for HOOKSTREAM_ENCRYPTION_KEY."""
    if not _KEY_ID.fullmatch(kid):
        raise ValueError("a key id is 1-64 of A-Z a-z 0-9 _ . -")
    return f"{kid}:{base64.b64encode(_random.token_bytes(KEY_BYTES)).decode('ascii')}"

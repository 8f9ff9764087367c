"""Encryption at rest for Hugging Face tokens: Fernet under FIELD_ENCRYPTION_KEY.

FIELD_ENCRYPTION_KEY holds one or more Fernet keys, comma-separated: the first encrypts, all
decrypt (MultiFernet), so a key can be rotated in by putting it first and running
`manage.py reencrypt_tokens`, then dropped once every token is re-encrypted.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from accounts import runtime

logger = logging.getLogger("hfproxy.crypto")


class DecryptionError(Exception):
    """A stored token cannot be decrypted with any configured key."""


def derived_debug_key(secret_key: str) -> bytes:
    """DEBUG only: a Fernet key derived from SECRET_KEY, so a dev setup needs no extra variable."""
    digest = hashlib.sha256(b"hfproxy field encryption\0" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def fernet_keys(value: str, *, debug: bool) -> list[Fernet]:
    """The keys a FIELD_ENCRYPTION_KEY value holds, or ImproperlyConfigured saying what to set.

    The one check of the variable: the settings run it at start-up (the server refuses to start
    without a usable key), and the keys are read through it. Empty is allowed only with `debug`.
    """
    keys = [key.strip() for key in value.split(",") if key.strip()]
    if not keys and not debug:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY is not set. Generate one with: "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    try:
        return [Fernet(key) for key in keys]
    except ValueError:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64-encoded bytes), comma-separated."
        ) from None


@functools.cache
def _fernet() -> MultiFernet:
    keys = fernet_keys(settings.FIELD_ENCRYPTION_KEY, debug=settings.DEBUG)
    if not keys:
        logger.warning(
            "FIELD_ENCRYPTION_KEY is not set: Hugging Face tokens are encrypted with a key derived "
            "from SECRET_KEY (DEBUG only). Set FIELD_ENCRYPTION_KEY before storing real tokens."
        )
        keys = [Fernet(derived_debug_key(settings.SECRET_KEY))]
    return MultiFernet(keys)


@runtime.resettable
def reset() -> None:
    """Forget the keys read from settings (tests that change FIELD_ENCRYPTION_KEY)."""
    _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except (InvalidToken, ValueError):
        raise DecryptionError("the token cannot be decrypted with FIELD_ENCRYPTION_KEY") from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt under the first key."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except (InvalidToken, ValueError):
        raise DecryptionError("the token cannot be decrypted with FIELD_ENCRYPTION_KEY") from None

"""Where an access-filtered catalog page stopped, carried in its ``Link`` without showing it.

A user who may see a few repositories of 100,000 would make a ``_catalog`` page read the whole
index after their last one. Such a page stops instead after reading
:data:`cargohold.registry.core.FILTERED_SCAN` names, shorter than ``n`` (the spec allows fewer
results with a ``Link``: compliant clients follow the ``Link``, not the page's length), and its
``Link`` says where to go on: ``last`` is still the last name shown, and ``_resume`` the last
name *read*, which the user may not see, so it is sealed (AES-GCM, key derived from
``http.secret``): the user learns nothing of it, and every replica that shares the secret
opens it. A ``_resume`` that does not open (another secret, tampered with) is ignored: the page
is read from ``last`` and then stops only with a name to show, so every request gets further.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PARAM = "_resume"
MAX_LENGTH = 1024  # a repository name is at most 255 characters
_NONCE = 12


def _key(secret: str) -> AESGCM:
    # Imported here: only a filtered page that stops early needs it, and a registry without
    # token auth should not carry cryptography (tests/auth/test_units.py checks).
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(hashlib.sha256(b"cargohold catalog resume\0" + secret.encode()).digest())


def seal(secret: str, name: str) -> str:
    nonce = secrets.token_bytes(_NONCE)
    sealed = _key(secret).encrypt(nonce, name.encode(), None)
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def unseal(secret: str, token: str) -> str | None:
    """The name in ``token``; None if it is not one this secret sealed."""
    from cryptography.exceptions import InvalidTag

    if len(token) > MAX_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if len(raw) <= _NONCE:
            return None
        return _key(secret).decrypt(raw[:_NONCE], raw[_NONCE:], None).decode()
    except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
        return None

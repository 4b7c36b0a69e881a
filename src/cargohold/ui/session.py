"""The web UI's session: a signed cookie, and the CSRF token tied to it.

The cookie holds ``{user, expiry, nonce, pw}`` as JSON with an HMAC-SHA256 of it, like the
upload state of :mod:`cargohold.api.uploadstate`, under a key *derived* from ``http.secret``
(so a session cookie can never be replayed as an upload state or the reverse). Every worker and
every replica sharing ``http.secret`` accepts it; nothing is kept server side. Because of that:

- it expires (``ui.sessionlifetime``, 12 hours by default) and is checked on every request;
- ``pw`` is a fingerprint of the user's htpasswd entry, so changing a password or removing the
  user ends that user's sessions at once (the file is re-read when it changes);
- logging out clears the cookie in the browser; a copy stolen before that stays valid until it
  expires, like a bearer token.

Flags: HttpOnly, SameSite=Strict, Path=the UI's root, Secure when the request came over TLS or
``http.host`` is an https URL. Visitors who are not logged in get an anonymous session too
(user None), so every form carries a CSRF token tied to *some* session: the token is an HMAC of
the session's nonce, a login rotates the nonce, and POSTs without a matching token (or with an
``Origin`` of another host) are refused.

The cookie is only read under ``/ui/``: ``/v2/`` keeps accepting only ``Authorization`` headers,
so a page on another site can never make a browser's session act on the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "cargohold_ui"
DEFAULT_LIFETIME = 12 * 3600.0
_KEY_LABEL = b"cargohold web UI session v1"
MAX_COOKIE = 1024


@dataclass(frozen=True, slots=True)
class Session:
    user: str | None  # None: anonymous
    expires: float
    nonce: str
    pw: str = ""  # fingerprint of the user's htpasswd entry when logged in

    @property
    def anonymous(self) -> bool:
        return self.user is None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(entry: str | None) -> str:
    """A short, one-way mark of an htpasswd hash: changes when the password does."""
    if entry is None:
        return ""
    return _b64(hashlib.sha256(entry.encode()).digest()[:12])


class SessionSigner:
    def __init__(self, secret: str, lifetime: float = DEFAULT_LIFETIME) -> None:
        self.key = hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self.lifetime = lifetime

    def new(self, user: str | None, pw: str = "") -> Session:
        expires = float(int(time.time() + self.lifetime))  # whole seconds, as encoded
        return Session(user, expires, secrets.token_urlsafe(16), pw)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, b"session\0" + payload, hashlib.sha256).digest()

    def encode(self, session: Session) -> str:
        payload = json.dumps(
            {"u": session.user, "e": int(session.expires), "n": session.nonce, "p": session.pw},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, value: str | None, now: float | None = None) -> Session | None:
        """The session in a cookie value; None when absent, malformed, forged or expired."""
        if not value or len(value) > MAX_COOKIE or value.count(".") != 1:
            return None
        payload_b64, mac_b64 = value.split(".")
        try:
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            doc = json.loads(payload)
            user = doc["u"]
            session = Session(
                None if user is None else str(user), float(doc["e"]), str(doc["n"]), str(doc["p"])
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self.key, b"csrf\0" + session.nonce.encode(), hashlib.sha256).digest())

    def check_csrf(self, session: Session, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(session).encode(), token.encode())

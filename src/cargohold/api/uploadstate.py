"""The signed upload state carried in upload URLs (``?_state=``), as registry:2 does.

Every ``Location`` of an upload in progress carries ``_state=<payload>.<mac>``: the repository
name, upload id, offset and start time as JSON, and an HMAC-SHA256 of it keyed with
``http.secret`` (both base64url). Replicas that share the secret accept each other's states; a
state whose MAC does not verify (tampered with, or signed with another secret), that cannot be
parsed, or that is older than the upload purging age (:func:`max_age`; a week when purging is
off) is refused with BLOB_UPLOAD_INVALID on GET, PATCH, PUT and DELETE, with registry:2's
status for that code (404, see :mod:`cargohold.errors`), which clients read as "start the upload
again". A correctly signed state that names another repository or upload does not describe the
URL it is on: 404 BLOB_UPLOAD_UNKNOWN, as for any upload that is not there.

Decisions (documented in the README):

- **A missing ``_state`` is accepted.** Some clients and proxies rebuild upload URLs from the
  path alone; the upload id is a random UUID (122 bits) that already works as a capability, and
  the upload must exist in the repository named by the path. Only a *present* state is checked.
- **The offset is signed but not enforced.** ``Content-Range`` is the spec's way to say where a
  chunk goes (a stale one gets 416); a PATCH without it appends at the end, as before. The
  offset in the state is what the registry had received when it issued the URL.

Without ``http.secret`` the server generates one at start (shared by its ``--workers``) and warns
that replicas will refuse each other's upload URLs; :func:`process_secret` is the last resort
for an app built without going through the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from cargohold.api.common import registry_of
from cargohold.errors import ErrorCode, RegistryError

PARAM = "_state"
DEFAULT_MAX_AGE = 7 * 24 * 3600.0  # registry:2's default upload purging age (168h)
MAX_LENGTH = 4096
GRANULARITY = 1.0  # started-at is in whole seconds: never expire a state early because of it
_PROCESS_SECRET = secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class UploadState:
    name: str
    upload_id: str
    offset: int
    started_at: str  # RFC 3339, UTC, as in the upload's startedat file


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def sign(secret: str, state: UploadState) -> str:
    payload = json.dumps(
        {
            "name": state.name,
            "uuid": state.upload_id,
            "offset": state.offset,
            "startedat": state.started_at,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def _invalid(why: str) -> RegistryError:
    return RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, f"invalid upload state: {why}")


class ExpiredState(RegistryError):
    def __init__(self, state: UploadState) -> None:
        super().__init__(ErrorCode.BLOB_UPLOAD_INVALID, "invalid upload state: expired")
        self.state = state


def verify(secret: str, token: str, max_age: float, at: float | None = None) -> UploadState:
    """The state in ``token``; BLOB_UPLOAD_INVALID if it is malformed, forged or expired
    (:class:`ExpiredState`)."""
    if len(token) > MAX_LENGTH or token.count(".") != 1:
        raise _invalid("malformed")
    payload_b64, mac_b64 = token.split(".")
    try:
        payload, mac = _unb64(payload_b64), _unb64(mac_b64)
    except ValueError:
        raise _invalid("malformed") from None
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise _invalid("signature does not match (tampered with, or signed with another secret)")
    try:
        doc = json.loads(payload)
        state = UploadState(
            str(doc["name"]), str(doc["uuid"]), int(doc["offset"]), str(doc["startedat"])
        )
        started = datetime.strptime(state.started_at[:19], "%Y-%m-%dT%H:%M:%S")
    except (ValueError, KeyError, TypeError):
        raise _invalid("malformed") from None
    age = (time.time() if at is None else at) - started.replace(tzinfo=UTC).timestamp()
    if age > max_age + GRANULARITY:
        raise ExpiredState(state)
    return state


def process_secret() -> str:
    return _PROCESS_SECRET


def secret_of(request: web.Request) -> str:
    return registry_of(request).config.http.secret or _PROCESS_SECRET


def max_age(request: web.Request) -> float:
    """Uploads older than the purging age are being deleted anyway; else a week."""
    purging = registry_of(request).config.storage.purging
    if purging.enabled and not purging.dryrun and purging.age > 0:
        return purging.age
    return DEFAULT_MAX_AGE


async def check(request: web.Request, name: str, upload_id: str) -> UploadState | None:
    """The request's state if it carries one (None if not); raises as described above.

    An expired state of an upload that is gone (purged) answers 404 BLOB_UPLOAD_UNKNOWN like
    any missing upload; only an upload still there gets 400 for its expired state."""
    token = request.query.get(PARAM)
    if token is None:
        return None
    try:
        state = verify(secret_of(request), token, max_age(request))
    except ExpiredState as expired:
        if expired.state.name == name and expired.state.upload_id == upload_id:
            await registry_of(request).uploads.offset(name, upload_id)  # 404 when gone
        raise
    if state.name != name or state.upload_id != upload_id:
        raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id})
    return state


def issue(request: web.Request, name: str, upload_id: str, offset: int, started_at: str) -> str:
    return sign(secret_of(request), UploadState(name, upload_id, offset, started_at))

"""Every error the registry API can answer, in one table, as distribution's errcode package does.

Handlers raise :class:`RegistryError`; the HTTP layer turns it into the spec's JSON body
``{"errors": [{"code", "message", "detail"}]}`` with the status from this table, so a status
code can never drift from its error code.
"""

from __future__ import annotations

from enum import Enum, unique
from typing import Any


@unique
class ErrorCode(Enum):
    # name = (HTTP status, message)
    UNKNOWN = (500, "unknown error")
    UNSUPPORTED = (405, "The operation is unsupported.")
    UNAUTHORIZED = (401, "authentication required")
    DENIED = (403, "requested access to the resource is denied")
    UNAVAILABLE = (503, "service unavailable")
    TOOMANYREQUESTS = (429, "too many requests")
    DIGEST_INVALID = (400, "provided digest did not match uploaded content")
    SIZE_INVALID = (400, "provided length did not match content length")
    RANGE_INVALID = (416, "invalid content range")
    NAME_INVALID = (400, "invalid repository name")
    TAG_INVALID = (400, "manifest tag did not match URI")
    NAME_UNKNOWN = (404, "repository name not known to registry")
    MANIFEST_UNKNOWN = (404, "manifest unknown")
    MANIFEST_INVALID = (400, "manifest invalid")
    MANIFEST_UNVERIFIED = (400, "manifest failed signature verification")
    MANIFEST_BLOB_UNKNOWN = (400, "blob unknown to registry")
    BLOB_UNKNOWN = (404, "blob unknown to registry")
    BLOB_UPLOAD_UNKNOWN = (404, "blob upload unknown to registry")
    BLOB_UPLOAD_INVALID = (404, "blob upload invalid")  # 404 in registry:2 and distribution
    PAGINATION_NUMBER_INVALID = (400, "invalid number of results requested")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]


class RegistryError(Exception):
    """An API error with its code; ``detail`` is any JSON value that helps the client."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}
        super().__init__(f"{code.name}: {self.message}")

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}

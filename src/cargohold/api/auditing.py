"""The API's part of the audit trail (:mod:`cargohold.audit`): pushes, tag moves, deletes, and
the refusals of the registry's rules (immutable tags, quotas), with the caller and address of the
request. Refusals by the auth middleware are recorded there."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from cargohold import audit
from cargohold.auth.accesslog import USER_KEY
from cargohold.errors import ErrorCode, RegistryError

# Refusals worth a line: the rules said no. (Malformed requests and unknown names are not.)
_REFUSALS = frozenset({ErrorCode.DENIED, ErrorCode.UNSUPPORTED})


def record(
    request: web.Request,
    action: str,
    repository: str,
    reference: str,
    outcome: str = "ok",
    **facts: str | None,
) -> None:
    audit.record(
        action,
        outcome,
        user=request.get(USER_KEY),
        addr=request.remote,
        repository=repository,
        reference=reference,
        level=logging.INFO if outcome == "ok" else logging.WARNING,
        **facts,
    )


@asynccontextmanager
async def refusals(
    request: web.Request, action: str, repository: str, reference: str
) -> AsyncIterator[None]:
    """Record a DENIED (immutable tag, quota) or UNSUPPORTED (read-only, deletes off) refusal of
    the block, then let the error go on to the client."""
    try:
        yield
    except RegistryError as err:
        if err.code in _REFUSALS:
            outcome = "denied" if err.code is ErrorCode.DENIED else err.code.name.lower()
            record(request, action, repository, reference, outcome, reason=err.message)
        raise

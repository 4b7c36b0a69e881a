"""The access log line, without secrets.

aiohttp's ``%r`` logs the request line with its query string. Registry clients send no
secrets there, but a token server's OAuth form can be sent as a query string and some tools
pass ``?access_token=``; those values are replaced by ``REDACTED``. Headers are never logged
except the ones the format names (``User-Agent``); an ``Authorization`` header asked for in
the format is redacted too. When the caller logged in, ``user=NAME`` ends the line.
"""

from __future__ import annotations

import os
import re
import time
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

USER_KEY: Final = web.RequestKey("cargohold.user", str)  # the caller's name, set by auth
SENSITIVE_PARAMS = frozenset(
    {
        "password",
        "passwd",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "secret",
        "code",
    }
)
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_ATOM = re.compile(r"%(\{([A-Za-z0-9\-_]+)\}([ioe])|[atPrsbD%]|Tf?)")


def redact_query(path_qs: str) -> str:
    path, sep, query = path_qs.partition("?")
    if not sep:
        return path_qs
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SENSITIVE_PARAMS for k, _ in pairs):
        return path_qs
    cleaned = [(k, "REDACTED" if k.lower() in SENSITIVE_PARAMS else v) for k, v in pairs]
    return f"{path}?{urlencode(cleaned, quote_via=quote)}"


class AccessLog(AbstractAccessLogger):
    """aiohttp's Apache-style format atoms (%a %t %P %r %s %b %T %Tf %D %{H}i %{H}o %{V}e)."""

    def log(self, request: BaseRequest, response: StreamResponse, time_taken: float) -> None:
        line = _ATOM.sub(lambda m: self._atom(m, request, response, time_taken), self.log_format)
        user = request.get(USER_KEY)
        if user:
            line += f" user={user}"
        self.logger.info(line)

    @staticmethod
    def _atom(
        m: re.Match[str], request: BaseRequest, response: StreamResponse, time_taken: float
    ) -> str:
        atom = m.group(0)
        if m.group(2):
            name, kind = m.group(2), m.group(3)
            if kind == "e":
                return os.environ.get(name, "-")
            if name.lower() in SENSITIVE_HEADERS:
                return "REDACTED"
            headers = request.headers if kind == "i" else response.headers
            return headers.get(name, "-")
        if atom == "%%":
            return "%"
        if atom == "%a":
            return request.remote or "-"
        if atom == "%t":
            return time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
        if atom == "%P":
            return f"<{os.getpid()}>"
        if atom == "%r":
            version = f"HTTP/{request.version.major}.{request.version.minor}"
            return f"{request.method} {redact_query(request.path_qs)} {version}"
        if atom == "%s":
            return str(response.status)
        if atom == "%b":
            return str(response.body_length)
        if atom == "%T":
            return str(round(time_taken))
        if atom == "%Tf":
            return f"{time_taken:06f}"
        if atom == "%D":
            return str(round(time_taken * 1_000_000))
        return atom

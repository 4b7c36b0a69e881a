"""Who is asking, and may they: the auth middleware, and the built-in token endpoint.

Every ``/v2/`` request needs what its route's access says (the table in
:mod:`cargohold.api.routes`), as in registry:2: ``GET``/``HEAD`` need ``pull``,
``POST``/``PUT``/``PATCH`` need ``pull`` and ``push``, ``DELETE`` needs ``delete`` (cancelling
an upload needs ``push``), ``/v2/_catalog`` needs ``registry:catalog:*`` and ``/v2/`` itself
only valid credentials. Then:

- no or wrong credentials: 401 ``UNAUTHORIZED`` with a ``WWW-Authenticate`` challenge (Basic
  with htpasswd; Bearer with realm, service and the scope the request needs with tokens);
- right credentials but not allowed: 403 ``DENIED`` (with tokens from another token server:
  401 ``error="insufficient_scope"``, since only that server knows if a new token would do);
- too many failed logins from one address for one user: 429 ``TOOMANYREQUESTS``, Retry-After.

Each refusal is one line on the ``cargohold.audit`` logger (user, address, method, path,
reason); passwords, tokens and Authorization headers are never logged. A cross-repository
mount from a repository the caller may not pull becomes an ordinary upload session, as the
spec prescribes for any mount that cannot happen. ``_catalog`` lists only repositories the
caller may pull when an ``access`` policy is configured.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import MultiDict

from cargohold import audit as audit_trail
from cargohold.api import routes
from cargohold.api.common import CATALOG_FILTER_KEY, REGISTRY_KEY
from cargohold.api.routes import RouteMatch
from cargohold.auth.accesslog import USER_KEY
from cargohold.auth.htpasswd import HtpasswdFile, PasswordChecker
from cargohold.auth.policy import ALL_ACTIONS, NOTHING, Policy
from cargohold.auth.scopes import Grants, InvalidToken, Scope, parse_scopes
from cargohold.auth.throttle import make_throttle
from cargohold.clientaddr import client_address, trusted_networks
from cargohold.config import Config, ConfigError, TokenConfig
from cargohold.errors import ErrorCode, RegistryError
from cargohold.registry.governance import Governance, Rules

if TYPE_CHECKING:
    from cargohold.auth.tokens import TokenIssuer, TokenVerifier

log = logging.getLogger("cargohold.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEFAULT_TOKEN_PATH = "/auth/token"
_ACTION_ORDER = ("pull", "push", "delete")


def _clean(text: str, limit: int = 300) -> str:
    """Safe for one log line: control characters and non-ASCII escaped, length capped."""
    return text[:limit].encode("unicode_escape").decode("ascii").replace('"', '\\"')


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def parse_basic(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def _is_empty_basic(value: str) -> bool:
    try:
        return base64.b64decode(value.strip(), validate=True) == b":"
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    """What a request touches and needs."""

    kind: str  # open | base | catalog | repository | other
    name: str = ""
    actions: tuple[str, ...] = ()

    @property
    def scope(self) -> str:
        if self.kind == "catalog":
            return "registry:catalog:*"
        if self.kind == "repository":
            return f"repository:{self.name}:{','.join(self.actions)}"
        return ""


def target_of(method: str, found: RouteMatch) -> Target:
    """What the matched route needs for ``method`` (the table's access, see api/routes.py)."""
    access = found.route.access(method)
    if access.kind == "repository":
        return Target("repository", found.params["name"], access.actions)
    if access.kind in ("catalog", "open"):
        return Target(access.kind)
    return Target("other" if found.route is routes.UNKNOWN else "base")


@dataclass(frozen=True)
class Identity:
    user: str | None  # None: anonymous (no credentials, or an anonymous token)
    authenticated: bool = False  # valid credentials or a valid token were presented
    grants: Grants | None = None  # what the bearer token allows (token auth only)
    builtin: bool = False  # the token came from our own token server


ANONYMOUS = Identity(None)


def _open_htpasswd(path: str, key: str) -> PasswordChecker:
    try:
        return PasswordChecker(HtpasswdFile(path))
    except OSError as exc:
        raise ConfigError(
            f"cannot read the htpasswd file {path}: {exc.strerror or exc} "
            f"(create it with: cargohold htpasswd add {path} USER)",
            key=key,
        ) from exc


class Authenticator:
    """The auth state of one worker: users, token keys, policy, failed-login counts."""

    def __init__(self, config: Config, governance: Governance | None = None) -> None:
        auth = config.auth
        # The access rules are read from the registry's Governance per request, so a reload
        # (cargohold.reload) changes them for the next request; Policy is rebuilt once per
        # generation of the rules.
        self.governance = governance
        self._policy = Policy(config.access)
        self._policy_of: Rules | None = governance.rules if governance is not None else None
        limits = config.http.limits
        self.throttle = make_throttle(limits.loginfailures, limits.loginwindow, config.redis)
        self.trusted = trusted_networks(config.http.trustedproxies)
        self.http_host = config.http.host
        self.prefix = config.http.prefix
        self.passwords: PasswordChecker | None = None
        self.verifier: TokenVerifier | None = None
        self.issuer: TokenIssuer | None = None
        self.token: TokenConfig | None = auth.token
        self.realm = ""
        if auth.htpasswd is not None:
            self.bearer = False
            self.realm = auth.htpasswd.realm
            self.passwords = _open_htpasswd(auth.htpasswd.path, "auth.htpasswd.path")
            return
        token = auth.token
        assert token is not None
        self.bearer = True
        # Only token auth needs PyJWT and cryptography: imported here, not by every registry.
        from cargohold.auth.tokens import TokenIssuer, TokenVerifier, load_or_create_signing_key

        own = None
        if token.builtin is not None:
            builtin = token.builtin
            self.passwords = _open_htpasswd(builtin.htpasswd, "auth.token.builtin.htpasswd")
            try:
                own = load_or_create_signing_key(builtin.key, builtin.certificate)
            except (OSError, ValueError) as exc:
                message = f"cannot load or create: {exc}"
                raise ConfigError(message, key="auth.token.builtin.key") from exc
            self.issuer = TokenIssuer(token, own, builtin.expiration)
        self.verifier = TokenVerifier(token, own)

    @property
    def policy(self) -> Policy:
        if self.governance is not None:
            rules = self.governance.rules
            if rules is not self._policy_of:
                self._policy, self._policy_of = Policy(rules.access), rules
        return self._policy

    def reload(self, config: Config) -> None:
        """Take a new htpasswd path (SIGHUP, config change); ConfigError when it cannot be read,
        and then nothing changed. Switching between htpasswd and token auth needs a restart."""
        auth = config.auth
        path = None
        if auth.htpasswd is not None and not self.bearer:
            path, key = auth.htpasswd.path, "auth.htpasswd.path"
        elif auth.token is not None and auth.token.builtin is not None and self.bearer:
            path, key = auth.token.builtin.htpasswd, "auth.token.builtin.htpasswd"
        passwords = self.passwords
        if path is not None and passwords is not None and path != passwords.htpasswd.path:
            self.passwords = _open_htpasswd(path, key)
            log.info("htpasswd file is now %s", path)

    # ------------------------------------------------------------------ the middleware

    def middleware(self) -> Middleware:
        @web.middleware
        async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            found = request.get(routes.ROUTE_KEY)
            if found is None:  # outside every area: /, /v2 (redirect), /auth/token, unknown paths
                return await handler(request)
            target = target_of(request.method, found)
            if target.kind == "open":
                return await handler(request)
            identity = await self.authenticate(request, target)
            if identity.user is not None:
                request[USER_KEY] = _clean(identity.user, 100)
            self.authorize(request, identity, target)
            if target.kind == "catalog" and self.policy.configured:
                user = identity.user

                def visible(repositories: list[str]) -> list[str]:
                    return self.policy.may_list(user, repositories)

                request[CATALOG_FILTER_KEY] = visible
            elif target.kind == "repository" and request.method == "POST":
                request = self._checked_mount(request, identity)
            return await handler(request)

        return auth_middleware

    # ------------------------------------------------------------------ who is asking

    async def authenticate(self, request: web.Request, target: Target) -> Identity:
        header = request.headers.get("Authorization", "")
        if not header:
            return ANONYMOUS
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()
        if not self.bearer:
            if scheme == "basic" and _is_empty_basic(credentials):
                return ANONYMOUS  # what containers/image sends for a Basic challenge, no login
            basic = parse_basic(credentials) if scheme == "basic" else None
            if basic is None:
                raise self.unauthorized(request, None, target, "malformed basic credentials")
            await self.login(request, basic[0], basic[1], target)
            return Identity(basic[0], authenticated=True)
        if scheme != "bearer":
            raise self.unauthorized(request, None, target, f"{scheme or 'empty'} credentials")
        assert self.verifier is not None
        try:
            claims = self.verifier.verify(credentials.strip())
        except InvalidToken as exc:
            reason = f"invalid token: {exc}"
            raise self.unauthorized(request, None, target, reason, error="invalid_token") from None
        return Identity(claims.subject or None, True, claims.grants, claims.builtin)

    async def login(
        self, request: web.Request, user: str, password: str, target: Target | None
    ) -> None:
        """Check a user's password (throttled); raises 401 or 429."""
        assert self.passwords is not None
        forwarded = request.headers.getall("X-Forwarded-For", [])
        key = (user, client_address(request.remote, forwarded, self.trusted))
        wait = await self.throttle.retry_after(key)
        if wait is not None:
            reason = f"too many failed logins, retry in {wait}s"
            self._audit(request, user, reason, action="login", outcome="locked-out")
            raise RegistryError(
                ErrorCode.TOOMANYREQUESTS,
                f"too many failed logins; retry in {wait} seconds",
                headers={"Retry-After": str(wait)},
            )
        if not await self.passwords.check(user, password):
            await self.throttle.failure(key)
            error = self.unauthorized(
                request, user, target, "wrong user name or password", action="login"
            )
            wait = await self.throttle.retry_after(key)
            if wait is not None:  # this failure started a lockout
                reason = f"too many failed logins: locked out for {wait}s"
                self._audit(request, user, reason, action="login", outcome="locked-out")
            raise error
        await self.throttle.success(key)

    # ------------------------------------------------------------------ may they

    def granted(self, identity: Identity, repository: str) -> frozenset[str]:
        if not self.bearer:
            return self.policy.allowed(identity.user, repository)
        everyone = self.policy.allowed(None, repository) if self.policy.configured else NOTHING
        if identity.grants is None:
            return everyone
        return identity.grants.actions("repository", repository) | everyone

    def authorize(self, request: web.Request, identity: Identity, target: Target) -> None:
        if target.kind in ("base", "other"):
            if not identity.authenticated:
                # every client's first request is a credential-less GET /v2/: not audited
                level = None if target.kind == "base" else logging.INFO
                raise self.unauthorized(request, None, target, "no credentials", level=level)
            return
        if target.kind == "catalog":
            if not identity.authenticated or identity.user is None:
                reason = "login required"
                raise self.unauthorized(request, None, target, reason, level=logging.INFO)
            if identity.grants is not None and "*" not in identity.grants.actions(
                "registry", "catalog"
            ):
                reason = "token lacks registry:catalog:*"
                error = "insufficient_scope"
                raise self.unauthorized(request, identity.user, target, reason, error=error)
            return
        granted = self.granted(identity, target.name)
        missing = [a for a in target.actions if a not in granted]
        if not missing:
            return
        what = f"{'/'.join(missing)} on {target.name}"
        if identity.user is None:
            reason = f"login required for {what}"
            raise self.unauthorized(request, None, target, reason, level=logging.INFO)
        if self.bearer and not (
            identity.builtin and set(missing) - self.policy.allowed(identity.user, target.name)
        ):
            raise self.unauthorized(
                request, identity.user, target, f"token lacks {what}", error="insufficient_scope"
            )
        self._audit(request, identity.user, f"not allowed to {what}", outcome="denied")
        raise RegistryError(
            ErrorCode.DENIED,
            detail=[{"Type": "repository", "Name": target.name, "Action": a} for a in missing],
        )

    def _checked_mount(self, request: web.Request, identity: Identity) -> web.Request:
        source = request.query.get("from")
        if not source or "mount" not in request.query:
            return request
        if "pull" in self.granted(identity, source):
            return request
        audit_trail.record(
            "mount",
            "refused",
            user=identity.user,
            addr=request.remote,
            repository=_where(request)[0],
            message=f"mount refused user={_clean(identity.user or '-')} "
            f"addr={request.remote or '-'} path={_clean(request.path)} from={_clean(source)} "
            "reason=no pull access; plain upload instead",
            source=source,
            reason="no pull access to the source; plain upload instead",
        )
        query = MultiDict((k, v) for k, v in request.query.items() if k not in ("mount", "from"))
        return request.clone(rel_url=request.rel_url.with_query(query))

    # ------------------------------------------------------------------ refusals

    def _audit(
        self,
        request: web.Request,
        user: str | None,
        reason: str,
        level: int = logging.WARNING,
        *,
        action: str = "access",
        outcome: str = "unauthorized",
    ) -> None:
        repository, reference = _where(request)
        audit_trail.record(
            action,
            outcome,
            user=user,
            addr=request.remote,
            repository=repository,
            reference=reference,
            level=level,
            message=f"denied user={_clean(user or '-', 100)} addr={request.remote or '-'} "
            f"method={request.method} path={_clean(request.path)} reason={_clean(reason)}",
            method=request.method,
            path=request.path,
            reason=reason,
        )

    def token_realm(self, request: web.Request) -> str:
        token = self.token
        assert token is not None
        if token.realm and not token.autoredirect:
            return token.realm
        if token.autoredirect:
            return f"{request.scheme}://{request.host}{token.autoredirectpath}"
        base = self.http_host or f"{request.scheme}://{request.host}"
        return f"{base}{token_path(token, self.prefix)}"

    def challenge(self, request: web.Request, target: Target | None, error: str = "") -> str:
        if not self.bearer:
            return f'Basic realm="{_quote(self.realm)}"'
        assert self.token is not None
        parts = [
            f'realm="{_quote(self.token_realm(request))}"',
            f'service="{_quote(self.token.service)}"',
        ]
        if target is not None and target.scope:
            parts.append(f'scope="{_quote(target.scope)}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    def unauthorized(
        self,
        request: web.Request,
        user: str | None,
        target: Target | None,
        reason: str,
        *,
        error: str = "",
        level: int | None = logging.WARNING,
        action: str = "access",
    ) -> RegistryError:
        """A 401 with the challenge, audited at ``level`` (None: not audited). Requests that
        only lack a login are INFO; wrong credentials and bad tokens are WARNING."""
        if level is not None:
            self._audit(request, user, reason, level, action=action)
        if target is None:  # the token endpoint: credentials for it are Basic
            assert self.token is not None
            header = f'Basic realm="{_quote(self.token.service)}"'
        else:
            header = self.challenge(request, target, error)
        return RegistryError(ErrorCode.UNAUTHORIZED, headers={"WWW-Authenticate": header})

    # ------------------------------------------------------------------ the token server

    def grant(self, user: str | None, scope: Scope) -> Scope:
        """The part of ``scope`` that ``user`` (None: anonymous) may have."""
        if scope.type == "repository":
            wanted = set(ALL_ACTIONS) if "*" in scope.actions else set(scope.actions)
            allowed = self.policy.allowed(user, scope.name)
            return Scope(
                scope.type, scope.name, tuple(a for a in _ACTION_ORDER if a in wanted & allowed)
            )
        if scope.type == "registry" and scope.name == "catalog" and user is not None:
            return Scope(scope.type, scope.name, ("*",) if "*" in scope.actions else ())
        return Scope(scope.type, scope.name, ())

    async def token_endpoint(self, request: web.Request) -> web.StreamResponse:
        """``GET /auth/token?service=...&scope=...`` with Basic credentials (or none, for an
        anonymous token), or the OAuth2 ``POST`` form with ``grant_type=password``."""
        assert self.issuer is not None
        params: MultiDict[str] = MultiDict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.extend((k, v) for k, v in form.items() if isinstance(v, str))
        service = params.get("service")
        if service and service != self.issuer.service:
            raise RegistryError(
                ErrorCode.DENIED, f"this token server serves {self.issuer.service!r}", status=400
            )
        user: str | None = None
        header = request.headers.get("Authorization", "")
        grant_type = params.get("grant_type")
        if header:
            scheme, _, credentials = header.strip().partition(" ")
            basic = parse_basic(credentials) if scheme.lower() == "basic" else None
            if basic is None:
                raise self.unauthorized(request, None, None, "token request: bad credentials")
            user = basic[0]
            await self.login(request, user, basic[1], None)
        elif grant_type == "password":
            user = params.get("username") or ""
            if not user:
                raise self.unauthorized(request, None, None, "token request: no username")
            await self.login(request, user, params.get("password", ""), None)
        elif grant_type is not None:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                f"grant_type {grant_type[:40]!r} is not supported",
                status=400,
            )
        scopes = [self.grant(user, s) for s in parse_scopes(params.getall("scope", []))]
        if user is not None:
            request[USER_KEY] = _clean(user, 100)
        body = self.issuer.issue(user or "", [s for s in scopes if s.actions])
        log.debug("token issued user=%s scopes=%s", _clean(user or "-"), " ".join(map(str, scopes)))
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


AUTH_KEY = web.AppKey("cargohold.auth", Authenticator)


def _where(request: web.Request) -> tuple[str, str]:
    """(repository, tag/digest/upload id) of a /v2/ request, for the audit trail."""
    found = request.get(routes.ROUTE_KEY)
    if found is None:
        return "", ""
    params = found.params
    reference = params.get("reference") or params.get("digest_s") or params.get("upload_id")
    return params.get("name", ""), reference or ""


def token_path(token: TokenConfig, prefix: str = "") -> str:
    """Where the built-in token server answers: the realm's path, else PREFIX/auth/token."""
    if token.realm:
        return urlsplit(token.realm).path or DEFAULT_TOKEN_PATH
    return prefix + DEFAULT_TOKEN_PATH


def install_auth(app: web.Application, config: Config) -> None:
    """Add the auth middleware (and the token endpoint) when ``auth`` is configured.

    Call before the app starts, after the error middleware is in place: the middleware runs
    inside it, so its RegistryErrors become the spec's JSON errors with their headers.
    Raises ConfigError when a file named by the configuration cannot be used.
    """
    if not config.auth.enabled:
        return
    registry = app.get(REGISTRY_KEY)
    auth = Authenticator(config, registry.governance if registry is not None else None)
    app[AUTH_KEY] = auth
    app.middlewares.append(auth.middleware())
    if auth.issuer is not None and auth.token is not None:
        path = token_path(auth.token, config.http.prefix)
        app.router.add_route("GET", path, auth.token_endpoint)
        app.router.add_route("POST", path, auth.token_endpoint)
    if config.http.tls is None:
        log.warning(
            "auth is on but http.tls is not: passwords and tokens cross the network in clear "
            "text unless a TLS proxy is in front (cargohold cert makes a certificate)"
        )

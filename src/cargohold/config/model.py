"""The model: what a loaded configuration is, as the rest of cargohold reads it.

Plain dataclasses with registry:2's defaults. Their defaults are also the field tables'
(config/fields.py), so a default is written once, here. Nothing in this module reads YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cargohold.config.values import parse_addr
from cargohold.storage.fsparams import DEFAULT_ROOTDIRECTORY

DEFAULT_ROOT = DEFAULT_ROOTDIRECTORY  # registry:2's, shared with the filesystem driver
LOG_LEVELS = ("error", "warn", "info", "debug")


# -- cargohold's operations sections: debug listener, online GC, notifications, retention --


@dataclass
class DebugConfig:
    """http.debug: the debug/admin listener (Prometheus metrics, /admin/* operations)."""

    addr: str = ""  # "" = no debug listener
    prometheus_enabled: bool = True  # registry:2 needs prometheus.enabled; here it is the default
    prometheus_path: str = "/metrics"


@dataclass
class GCConfig:
    """storage.maintenance.gc (cargohold): garbage collection while serving, on a schedule."""

    enabled: bool = False
    interval: float = 24 * 3600.0  # seconds between runs
    graceperiod: float = 3600.0  # nothing written more recently than this is collected
    deleteuntagged: bool = False
    dryrun: bool = False
    settle: float = 10.0  # seconds between publishing a batch of deletions and deleting


@dataclass
class NotificationEndpoint:
    """One notifications.endpoints entry, with registry:2's defaults."""

    name: str
    url: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    timeout: float = 1.0
    threshold: int = 10
    backoff: float = 1.0
    ignored_mediatypes: list[str] = field(default_factory=list)
    ignored_actions: list[str] = field(default_factory=list)


@dataclass
class NotificationsConfig:
    endpoints: list[NotificationEndpoint] = field(default_factory=list)
    include_references: bool = False


@dataclass
class RetentionPolicy:
    """retention.policies entry (cargohold): which tags of matching repositories to keep."""

    repositories: list[str]  # globs (fnmatch): the first policy that matches a repository wins
    keep_last: int | None = None  # the newest N tags (by push time)
    keep_within: float | None = None  # tags pushed or pulled within this many seconds
    keep_tags: str | None = None  # tags matching this regular expression (re.search)
    delete_untagged: bool = False


@dataclass
class RetentionConfig:
    policies: list[RetentionPolicy] = field(default_factory=list)
    pull_flush_interval: float = 60.0  # how often pull times are written to storage


@dataclass
class UiConfig:
    """ui (cargohold): the web UI under /ui/ on the registry's own port."""

    enabled: bool = True
    sessionlifetime: float = 12 * 3600.0  # seconds a login lasts


@dataclass
class LogConfig:
    level: str = "info"  # error | warn | info | debug
    formatter: str = "text"  # text | json (registry:2's logstash is read as json)
    fields: dict[str, Any] = field(default_factory=dict)
    accesslog_disabled: bool = False
    audit_path: str = ""  # log.audit.path (cargohold): "" none, "-" or "stdout", else a file


@dataclass
class UploadPurging:
    enabled: bool = True
    age: float = 168 * 3600.0  # seconds
    interval: float = 24 * 3600.0  # seconds
    dryrun: bool = False


DEFAULT_BLOBDIRSIZE = 10 * 1024**3


@dataclass
class StorageConfig:
    driver: str = "filesystem"
    # filesystem: always holds `rootdirectory` (str) and `maxthreads` (int) after validation.
    params: dict[str, Any] = field(default_factory=dict)
    delete_enabled: bool = False
    redirect_disable: bool = False
    redirect_expirydelay: float = 0.0  # seconds a redirect URL is valid; 0: the driver's default
    readonly: bool = False
    purging: UploadPurging = field(default_factory=UploadPurging)
    gc: GCConfig = field(default_factory=GCConfig)
    cache_blobdescriptor: str = ""  # "" (no cache) | inmemory | redis (needs Config.redis)
    # A replica's local blob cache for remote drivers (registry/blobcache.py); "": none.
    cache_blobdir: str = ""
    cache_blobdirsize: int = DEFAULT_BLOBDIRSIZE

    @property
    def rootdirectory(self) -> str:
        return str(self.params.get("rootdirectory", DEFAULT_ROOT))


# Go's names of the TLS 1.2 suites registry:2 accepts in http.tls.ciphersuites, in OpenSSL's
# spelling. TLS 1.3 suites are always enabled, in Go and in OpenSSL alike.
TLS12_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
TLS13_CIPHER_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
TLS_VERSIONS = ("tls1.2", "tls1.3")


@dataclass
class TlsConfig:
    """http.tls: serve HTTPS; with clientcas, require a client certificate signed by one."""

    certificate: str
    key: str
    clientcas: list[str] = field(default_factory=list)
    minimumtls: str = "tls1.2"  # tls1.2 | tls1.3
    ciphersuites: list[str] = field(default_factory=list)  # Go names; [] = OpenSSL's defaults


@dataclass
class HttpLimits:
    """``http.limits`` (cargohold): what one client may cost the server. Each 0 means no limit."""

    headertimeout: float = 20.0  # seconds for a request line and headers, once begun (slowloris)
    idletimeout: float = 300.0  # seconds a keep-alive connection may wait for its next request
    maxheaderbytes: int = 8190  # the request line, and each header field
    maxheaders: int = 128  # header fields per request
    maxconnectionsperclient: int = 256  # open connections from one address (per worker)
    loginfailures: int = 5  # failed logins per user and client address within loginwindow
    loginwindow: float = 60.0  # seconds


@dataclass
class HttpConfig:
    addr: str = ":5000"
    prefix: str = ""  # normalised to "/path" (no trailing slash), "" for none
    host: str = ""  # absolute URL clients reach us at, "" to derive it from the request
    secret: str = ""  # "" means: the server makes a random one (and should warn, as registry:2)
    headers: dict[str, list[str]] = field(default_factory=dict)
    relativeurls: bool = False
    net: str = "tcp"
    draintimeout: float = 0.0  # seconds
    http2_disabled: bool = False
    tls: TlsConfig | None = None
    limits: HttpLimits = field(default_factory=HttpLimits)
    trustedproxies: list[str] = field(default_factory=list)  # CIDRs whose X-Forwarded-For counts

    @property
    def bind(self) -> tuple[str, int]:
        """(host, port) to listen on; host '' means all interfaces."""
        return parse_addr(self.addr)


@dataclass
class ValidationConfig:
    disabled: bool = False
    # distribution 3's validation.manifests.indexes: which platforms of an index must be present.
    indexes_platforms: str = "all"  # all | none | list
    indexes_platformlist: list[dict[str, str]] = field(default_factory=list)
    urls_allow: list[str] = field(default_factory=list)
    urls_deny: list[str] = field(default_factory=list)


TOKEN_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


@dataclass
class HtpasswdConfig:
    """auth.htpasswd: HTTP Basic logins checked against a bcrypt htpasswd file."""

    realm: str
    path: str


@dataclass
class BuiltinTokenConfig:
    """auth.token.builtin (cargohold): also be the token server, at /auth/token."""

    htpasswd: str  # who may log in
    key: str  # PEM signing key; generated (0600) on first start when missing
    certificate: str  # self-signed certificate of the key, written next to it
    expiration: float = 300.0  # token lifetime, seconds


@dataclass
class TokenConfig:
    """auth.token: bearer tokens (Docker registry token spec) from a token server."""

    realm: str  # "" (builtin only): the request's own https://HOST/auth/token
    service: str
    issuer: str
    rootcertbundle: str = ""
    jwks: str = ""
    autoredirect: bool = False
    autoredirectpath: str = "/auth/token"
    signingalgorithms: list[str] = field(default_factory=lambda: list(TOKEN_ALGORITHMS))
    builtin: BuiltinTokenConfig | None = None


@dataclass
class AuthConfig:
    htpasswd: HtpasswdConfig | None = None
    token: TokenConfig | None = None

    @property
    def enabled(self) -> bool:
        return self.htpasswd is not None or self.token is not None


ACCESS_ACTIONS = ("pull", "push", "delete")


@dataclass
class AccessRule:
    """Grants `actions` on repositories matching any of `repositories` to the named callers."""

    repositories: list[str]  # globs: * and ? stay within a path segment, ** crosses them
    actions: list[str]  # subset of ACCESS_ACTIONS; push implies pull
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    anonymous: bool = False  # anyone, without credentials
    authenticated: bool = False  # anyone who logged in


@dataclass
class AccessConfig:
    """access (cargohold): who may pull, push and delete what; absent = every user, everything."""

    admins: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    rules: list[AccessRule] = field(default_factory=list)


@dataclass
class RedisConfig:
    """registry:2's `redis` section (the blob descriptor cache's server); durations in seconds."""

    addr: str
    password: str = ""
    username: str = ""
    db: int = 0
    dialtimeout: float = 0.0  # 0: the client's default
    readtimeout: float = 0.0
    writetimeout: float = 0.0
    pool_maxidle: int = 0
    pool_maxactive: int = 0  # 0: no limit
    pool_idletimeout: float = 0.0
    tls_enabled: bool = False
    tls_certificate: str = ""  # client certificate, for servers that require one
    tls_key: str = ""
    tls_clientcas: list[str] = field(default_factory=list)  # CAs to verify the server with


@dataclass(frozen=True)
class ImmutableRule:
    """immutable[] (cargohold): tags matching ``tags`` in matching repositories never move."""

    repositories: tuple[str, ...]  # globs as in access
    tags: str  # a regular expression, re.search on the tag


@dataclass(frozen=True)
class QuotaRule:
    """quotas[] (cargohold): a size limit per matching repository, or for all of them together."""

    repositories: tuple[str, ...]  # globs as in access
    size: int  # bytes
    namespace: bool = False  # True: one limit shared by every matching repository


# -- pull-through mirrors: registry:2's proxy section and cargohold's mirrors list --------

DEFAULT_MIRROR_TTL = 168 * 3600.0  # registry:2's proxy.ttl default


@dataclass(frozen=True)
class PrefetchRule:
    """Keep ``repository`` (upstream name) in sync for every tag matching one of ``tags``."""

    repository: str
    tags: tuple[str, ...] = ("latest",)  # regular expressions, matched whole


@dataclass(frozen=True)
class MirrorConfig:
    """One upstream: ``proxy`` (prefix "", every repository mirrored) or a ``mirrors`` entry."""

    prefix: str
    remoteurl: str
    username: str = ""
    password: str = ""
    ttl: float = DEFAULT_MIRROR_TTL  # 0: cached content never expires
    repositories: tuple[str, ...] = ()  # allow-list of upstream names (globs as in `access`)
    cafile: str = ""
    insecure: bool = False  # accept self-signed certificates
    tagfreshness: float = 0.0  # a tag checked upstream this recently is served without a HEAD
    maxconnections: int = 16  # per worker process
    maxsize: int = 0  # bytes; 0: unbounded
    prefetch: tuple[PrefetchRule, ...] = ()
    prefetchinterval: float = 3600.0
    timeout: float = 30.0  # connecting and each read of the upstream
    # How often maxsize and ttl are enforced; an image pulled this recently is never evicted.
    evictinterval: float = 60.0

    @property
    def label(self) -> str:
        """The name metrics and logs use for this mirror."""
        return self.prefix or "proxy"


@dataclass
class MirrorsConfig:
    entries: list[MirrorConfig] = field(default_factory=list)

    @property
    def root(self) -> MirrorConfig | None:
        """The registry:2 ``proxy`` mirror, when the whole registry is one."""
        return next((m for m in self.entries if m.prefix == ""), None)


@dataclass
class Config:
    version: str = "0.1"
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    raw: dict[str, Any] = field(default_factory=dict)
    auth: AuthConfig = field(default_factory=AuthConfig)
    access: AccessConfig | None = None
    redis: RedisConfig | None = None  # the `redis` section, None when absent or empty
    debug: DebugConfig = field(default_factory=DebugConfig)  # http.debug
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    retention: RetentionConfig | None = None
    ui: UiConfig = field(default_factory=UiConfig)
    immutable: list[ImmutableRule] = field(default_factory=list)  # cargohold
    quotas: list[QuotaRule] = field(default_factory=list)  # cargohold
    source: str | None = None  # the file it was loaded from (None: embedded default)
    mirrors: MirrorsConfig = field(default_factory=MirrorsConfig)  # proxy + mirrors

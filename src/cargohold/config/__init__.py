"""registry:2-compatible configuration: the same YAML file and the same REGISTRY_* overrides.

CONTRACT (the rest of the code relies on exactly these names, all importable from here):
    load_config(path: str | None, environ: Mapping[str, str] | None = None) -> Config
    default_config(root: str) -> Config          # the embedded default (no file)
    locate_config(explicit, root=...) -> ConfigLocation   # which file, which default data dir
    ConfigError(Exception)                       # message names the offending key
Everything not listed in the dataclasses is kept in Config.raw.

Why this package is strict: cargohold is a drop-in for CNCF distribution's `registry:2`, so an
operator can point it at the config file and environment they already have. Silently ignoring a
section we do not implement yet (auth, TLS, notifications...) would start a registry that looks
fine but is open, unencrypted or deaf, so every such section is a ConfigError that names it.
Sections that change nothing a client can observe (health, reporting...) are accepted.

The modules, in the order they depend on each other:
    values    decoders (value, key, default) -> typed value; ConfigError; durations, addresses
    fields    the declarative field table: Field rows and the Section that reads them
    model     the dataclasses (their defaults are the tables' defaults)
    sections  each section's table and the checks spanning its keys; build() makes a Config
    loader    YAML, the embedded default, REGISTRY_* overrides: registry:2's rules in one place
    location  which config file a command reads and the default data directory
Storage drivers' own parameters (storage.filesystem, storage.s3...) are read beside the drivers,
in cargohold.storage.fsparams / memparams / s3params; sections._DRIVERS lists them.

Adding a section (say a hypothetical ``webhooks`` with ``ttl`` and ``enabled``) is a few lines:
  1. model.py: a dataclass with the defaults, and a field on Config;
         @dataclass
         class WebhooksConfig:
             enabled: bool = False
             ttl: float = 3600.0
  2. sections.py: its table, and one line in build() (plus a parser function only for checks
     that span keys, like "ttl must be positive when enabled");
         WEBHOOKS = Section("webhooks", WebhooksConfig,
                           (Field("enabled", boolean), Field("ttl", duration)))
         ...  webhooks=WEBHOOKS.build(raw_config.get("webhooks")),
  3. sections.SECTIONS: add the top-level name (else it is warned about as unknown, and
     REGISTRY_WEBHOOKS_* overrides are ignored); a key under an existing section is just a row.
Nested keys are dotted rows (``Field("pool.maxidle", integer)`` fills ``pool_maxidle``); a
sub-section with checks of its own is a row whose decoder is its parser (see maintenance.gc).
Unknown keys are warned about with their dotted name, wrong types raise ConfigError naming it.
"""

from __future__ import annotations

from cargohold.config.fields import Field, Section
from cargohold.config.loader import (
    CONFIGURATION_PATH_VARIABLE,
    EMBEDDED_DEFAULT_YAML,
    ENV_PREFIX,
    apply_env_overrides,
    default_config,
    load_config,
)
from cargohold.config.location import ConfigLocation, default_data_dir, locate_config
from cargohold.config.model import (
    ACCESS_ACTIONS,
    DEFAULT_ROOT,
    LOG_LEVELS,
    TLS12_CIPHER_SUITES,
    TLS13_CIPHER_SUITES,
    TLS_VERSIONS,
    TOKEN_ALGORITHMS,
    AccessConfig,
    AccessRule,
    AuthConfig,
    BuiltinTokenConfig,
    Config,
    DebugConfig,
    GCConfig,
    HtpasswdConfig,
    HttpConfig,
    HttpLimits,
    ImmutableRule,
    LogConfig,
    MirrorConfig,
    MirrorsConfig,
    NotificationEndpoint,
    NotificationsConfig,
    PrefetchRule,
    QuotaRule,
    RedisConfig,
    RetentionConfig,
    RetentionPolicy,
    StorageConfig,
    TlsConfig,
    TokenConfig,
    UiConfig,
    UploadPurging,
    ValidationConfig,
)
from cargohold.config.values import ConfigError, parse_addr, parse_duration, parse_size

__all__ = [
    "ACCESS_ACTIONS",
    "CONFIGURATION_PATH_VARIABLE",
    "DEFAULT_ROOT",
    "EMBEDDED_DEFAULT_YAML",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "TLS12_CIPHER_SUITES",
    "TLS13_CIPHER_SUITES",
    "TLS_VERSIONS",
    "TOKEN_ALGORITHMS",
    "AccessConfig",
    "AccessRule",
    "AuthConfig",
    "BuiltinTokenConfig",
    "Config",
    "ConfigError",
    "ConfigLocation",
    "DebugConfig",
    "Field",
    "GCConfig",
    "HtpasswdConfig",
    "HttpConfig",
    "HttpLimits",
    "ImmutableRule",
    "LogConfig",
    "MirrorConfig",
    "MirrorsConfig",
    "NotificationEndpoint",
    "NotificationsConfig",
    "PrefetchRule",
    "QuotaRule",
    "RedisConfig",
    "RetentionConfig",
    "RetentionPolicy",
    "Section",
    "StorageConfig",
    "TlsConfig",
    "TokenConfig",
    "UiConfig",
    "UploadPurging",
    "ValidationConfig",
    "apply_env_overrides",
    "default_config",
    "default_data_dir",
    "load_config",
    "locate_config",
    "parse_addr",
    "parse_duration",
    "parse_size",
]

"""Tests for cargohold.config: registry:2's YAML file, REGISTRY_* overrides and validation.

Everything runs on real temporary files and explicit environ dicts, so each test states exactly
which variables are set.
"""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from cargohold.config import (
    EMBEDDED_DEFAULT_YAML,
    ConfigError,
    apply_env_overrides,
    default_config,
    load_config,
    parse_addr,
    parse_duration,
)

DEBIAN_CONFIG = Path("/etc/docker/registry/config.yml")

MINIMAL = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: /srv/registry
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Any:
    return load_config(write(tmp_path, text), environ or {})


# --------------------------------------------------------------------------- defaults


def test_embedded_default_uses_the_given_root(tmp_path: Path) -> None:
    config = load_config(None, {}, default_root=str(tmp_path))
    assert config.version == "0.1"
    assert config.storage.driver == "filesystem"
    assert config.storage.rootdirectory == str(tmp_path)
    assert config.storage.delete_enabled is True
    assert config.storage.purging.enabled is True
    assert config.storage.purging.age == 168 * 3600
    assert config.storage.purging.interval == 24 * 3600
    assert config.http.addr == ":5000"
    assert config.http.bind == ("", 5000)
    assert config.log.level == "info"
    assert config.raw["storage"]["filesystem"]["rootdirectory"] == str(tmp_path)


def test_default_config_matches_load_config_none_and_ignores_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_HTTP_ADDR", ":6000")
    config = default_config(str(tmp_path))
    assert config.http.addr == ":5000"
    assert config == load_config(None, {}, default_root=str(tmp_path))


def test_embedded_default_without_root_uses_registry_default() -> None:
    config = load_config(None, {})
    assert config.storage.rootdirectory == "/var/lib/registry"
    assert yaml.safe_load(EMBEDDED_DEFAULT_YAML)["version"] == 0.1


def test_environ_none_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:5999")
    config = load_config(write(tmp_path, MINIMAL))
    assert config.http.bind == ("127.0.0.1", 5999)


def test_env_overrides_apply_on_top_of_the_embedded_default(tmp_path: Path) -> None:
    config = load_config(
        None, {"REGISTRY_STORAGE_DELETE_ENABLED": "false"}, default_root=str(tmp_path)
    )
    assert config.storage.delete_enabled is False
    assert config.storage.rootdirectory == str(tmp_path)


# --------------------------------------------------------------------------- the seed's variables


def test_seed_tls_variables_configure_http_tls(tmp_path: Path) -> None:
    environ = {
        "REGISTRY_HTTP_TLS_CERTIFICATE": "/certs/server.crt",
        "REGISTRY_HTTP_TLS_KEY": "/certs/server.key",
    }
    tls = load_config(None, environ, default_root=str(tmp_path)).http.tls
    assert tls is not None
    assert (tls.certificate, tls.key, tls.minimumtls) == (
        "/certs/server.crt",
        "/certs/server.key",
        "tls1.2",
    )


def test_seed_s3_variables_replace_storage_then_fill_it_in() -> None:
    raw: dict[str, Any] = yaml.safe_load(MINIMAL)
    apply_env_overrides(
        raw,
        {
            "REGISTRY_STORAGE_S3_REGION": "ap-northeast-1",
            "REGISTRY_STORAGE_S3_BUCKET": "docker-registry.kh-developer",
            "REGISTRY_STORAGE": "s3",
            "REGISTRY_STORAGE_S3_ACCESSKEY": "AKEXAMPLE",
        },
    )
    assert raw["storage"] == {
        "s3": {
            "accesskey": "AKEXAMPLE",
            "bucket": "docker-registry.kh-developer",
            "region": "ap-northeast-1",
        }
    }


def test_seed_s3_variables_configure_the_s3_driver(tmp_path: Path) -> None:
    environ = {"REGISTRY_STORAGE": "s3", "REGISTRY_STORAGE_S3_BUCKET": "b"}
    with pytest.raises(ConfigError, match=r"^storage\.s3\.region: is required"):
        load_text(tmp_path, MINIMAL, environ)
    environ["REGISTRY_STORAGE_S3_REGION"] = "eu-west-1"
    storage = load_text(tmp_path, MINIMAL, environ).storage
    assert (storage.driver, storage.params) == ("s3", {"bucket": "b", "region": "eu-west-1"})


def test_s3_timeouts_come_from_the_environment_too(tmp_path: Path) -> None:
    environ = {
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_STORAGE_S3_BUCKET": "b",
        "REGISTRY_STORAGE_S3_REGION": "eu-west-1",
        "REGISTRY_STORAGE_S3_READTIMEOUT": "2s",
        "REGISTRY_STORAGE_S3_CONNECTTIMEOUT": "500ms",
    }
    storage = load_text(tmp_path, MINIMAL, environ).storage
    assert storage.params["readtimeout"] == "2s"
    assert storage.params["connecttimeout"] == "500ms"
    environ["REGISTRY_STORAGE_S3_READTIMEOUT"] = "whenever"
    with pytest.raises(ConfigError, match=r"^storage\.s3\.readtimeout: invalid duration"):
        load_text(tmp_path, MINIMAL, environ)


def test_seed_htpasswd_variables_build_auth_section(tmp_path: Path) -> None:
    environ = {
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
        "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
    }
    raw: dict[str, Any] = yaml.safe_load(MINIMAL)
    apply_env_overrides(raw, environ)
    assert raw["auth"] == {"htpasswd": {"realm": "Registry Realm", "path": "/auth/htpasswd"}}
    htpasswd = load_text(tmp_path, MINIMAL, environ).auth.htpasswd
    assert htpasswd is not None
    assert (htpasswd.realm, htpasswd.path) == ("Registry Realm", "/auth/htpasswd")


# --------------------------------------------------------------------------- override rules


def test_storage_string_then_rootdirectory(tmp_path: Path) -> None:
    text = "version: 0.1\nstorage:\n  inmemory: {}\n  delete: {enabled: true}\n"
    environ = {
        "REGISTRY_STORAGE": "filesystem",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/x",
    }
    config = load_text(tmp_path, text, environ)
    assert config.storage.driver == "filesystem"
    assert config.storage.rootdirectory == "/x"
    # REGISTRY_STORAGE replaced the whole section, delete included, as registry:2 does.
    assert config.storage.delete_enabled is False
    assert set(config.raw["storage"]) == {"filesystem"}


def test_overrides_apply_in_sorted_order_not_dict_order(tmp_path: Path) -> None:
    # Inserted in the "wrong" order: applied as given, REGISTRY_STORAGE would wipe the root.
    environ = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/x",
        "REGISTRY_STORAGE": "filesystem",
    }
    config = load_text(tmp_path, MINIMAL, environ)
    assert config.storage.rootdirectory == "/x"


def test_later_specific_variable_wins_over_whole_section(tmp_path: Path) -> None:
    environ = {"REGISTRY_HTTP_ADDR": ":7000", "REGISTRY_HTTP": "{addr: ':6000', secret: s}"}
    config = load_text(tmp_path, MINIMAL, environ)
    assert config.http.addr == ":7000"
    assert config.http.secret == "s"


def test_values_are_parsed_as_yaml(tmp_path: Path) -> None:
    environ = {
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_STORAGE_FILESYSTEM_MAXTHREADS": "50",
        "REGISTRY_HTTP_HEADERS_X-CUSTOM": "[a, b]",
        "REGISTRY_LOG_FIELDS": "{environment: staging, replicas: 3}",
        "REGISTRY_HTTP_SECRET": "12345",
    }
    config = load_text(tmp_path, MINIMAL, environ)
    assert config.raw["storage"]["delete"]["enabled"] is True
    assert config.storage.delete_enabled is True
    assert config.raw["storage"]["filesystem"]["maxthreads"] == 50
    assert config.storage.params["maxthreads"] == 50
    assert config.http.headers["x-custom"] == ["a", "b"]
    assert config.log.fields == {"environment": "staging", "replicas": 3}
    # An int where registry:2 has a string field becomes its text, as with Go's yaml.v2.
    assert config.raw["http"]["secret"] == 12345
    assert config.http.secret == "12345"


def test_dates_and_base60_look_alikes_stay_strings(tmp_path: Path) -> None:
    environ = {"REGISTRY_HTTP_SECRET": "2024-01-01", "REGISTRY_LOG_FIELDS_SHIFT": "1:30"}
    config = load_text(tmp_path, MINIMAL, environ)
    assert config.http.secret == "2024-01-01"
    assert config.log.fields["shift"] == "1:30"


def test_keys_match_case_insensitively(tmp_path: Path) -> None:
    text = MINIMAL + "  delete:\n    enabled: false\n"
    config = load_text(tmp_path, text, {"REGISTRY_STORAGE_DELETE_ENABLED": "true"})
    assert config.storage.delete_enabled is True
    assert config.raw["storage"]["delete"] == {"enabled": True}


def test_existing_mixed_case_key_is_replaced_not_duplicated(tmp_path: Path) -> None:
    text = MINIMAL + "http:\n  headers:\n    X-Frame-Options: [DENY]\n"
    config = load_text(tmp_path, text, {"REGISTRY_HTTP_HEADERS_X-FRAME-OPTIONS": "[SAMEORIGIN]"})
    assert config.http.headers == {"X-Frame-Options": ["SAMEORIGIN"]}


def test_new_keys_are_created_lowercase(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL, {"REGISTRY_LOG_FIELDS_ENVIRONMENT": "staging"})
    assert config.raw["log"] == {"fields": {"environment": "staging"}}
    assert config.log.fields == {"environment": "staging"}


def test_list_entries_are_addressed_by_index(tmp_path: Path) -> None:
    text = MINIMAL + "notifications:\n  endpoints:\n    - name: hook\n      url: http://h/\n"
    assert [e.name for e in load_text(tmp_path, text).notifications.endpoints] == ["hook"]
    config = load_text(tmp_path, text, {"REGISTRY_NOTIFICATIONS_ENDPOINTS_0_DISABLED": "true"})
    assert config.raw["notifications"]["endpoints"][0]["disabled"] is True
    assert config.notifications.endpoints == []


def test_configuration_path_is_not_an_override(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cargohold.config")
    config = load_text(tmp_path, MINIMAL, {"REGISTRY_CONFIGURATION_PATH": "/etc/x.yml"})
    assert "configuration" not in config.raw
    assert caplog.records == []


@pytest.mark.parametrize(
    "name",
    [
        "REGISTRY_NOSUCHSECTION_KEY",  # unknown top-level section
        "REGISTRY_HTTP_ADDR_PORT",  # descends into the scalar http.addr
        "REGISTRY_VERSION",  # the version is never overridden
    ],
)
def test_inapplicable_overrides_are_warned_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.WARNING, logger="cargohold.config")
    text = MINIMAL + "http:\n  addr: :5001\n"
    config = load_text(tmp_path, text, {name: "7"})
    assert config.http.addr == ":5001"
    assert config.version == "0.1"
    assert any(name in r.getMessage() for r in caplog.records)


def test_invalid_yaml_in_a_variable_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^REGISTRY_HTTP_HEADERS_X-A: invalid YAML"):
        load_text(tmp_path, MINIMAL, {"REGISTRY_HTTP_HEADERS_X-A": "[unclosed"})


def test_non_prefixed_variables_are_ignored(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL, {"HTTP_ADDR": ":1", "registry_http_addr": ":2"})
    assert config.http.addr == ":5000"


# --------------------------------------------------------------------------- file handling


def test_raw_keeps_the_whole_merged_dict(tmp_path: Path) -> None:
    text = MINIMAL + "health:\n  storagedriver: {enabled: true, interval: 10s}\n"
    config = load_text(tmp_path, text, {"REGISTRY_CATALOG_MAXENTRIES": "50"})
    assert config.raw["health"] == {"storagedriver": {"enabled": True, "interval": "10s"}}
    assert config.raw["catalog"] == {"maxentries": 50}
    assert config.raw["version"] == 0.1


def test_unknown_keys_warn_but_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cargohold.config")
    text = MINIMAL + "frobnicate: 1\nhttp:\n  adress: ':6000'\n"
    config = load_text(tmp_path, text)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "frobnicate" in messages
    assert "http.adress" in messages
    assert config.raw["frobnicate"] == 1


def test_storage_as_plain_string_means_driver_without_params(tmp_path: Path) -> None:
    config = load_text(tmp_path, "version: 0.1\nstorage: inmemory\n")
    assert config.storage.driver == "inmemory"
    assert config.raw["storage"] == {"inmemory": {}}


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(str(tmp_path / "absent.yml"), {})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("version: 0.1\nstorage: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "mapping at the top level"),
        ("", "^version: missing"),
        ("storage: inmemory\n", "^version: missing"),
        ("version: 0.2\nstorage: inmemory\n", "^version: unsupported version '0.2'"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_text(tmp_path, text)


def test_version_as_string_is_accepted(tmp_path: Path) -> None:
    assert load_text(tmp_path, 'version: "0.1"\nstorage: inmemory\n').version == "0.1"


# --------------------------------------------------------------------------- invalid values


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "  delete:\n    enabled: maybe\n",
            "storage.delete.enabled: expected a boolean, got 'maybe'",
        ),
        (
            "  maintenance:\n    uploadpurging: {age: a week}\n",
            "storage.maintenance.uploadpurging.age: invalid duration 'a week'",
        ),
        (
            "  maintenance:\n    uploadpurging: {interval: 86400}\n",
            "storage.maintenance.uploadpurging.interval: expected a duration",
        ),
        (
            "  maintenance:\n    readonly: {enabled: 1}\n",
            "storage.maintenance.readonly.enabled: expected a boolean, got 1",
        ),
        ("  redirect:\n    disable: nope\n", "storage.redirect.disable: expected a boolean"),
        ("    maxthreads: lots\n", "storage.filesystem.maxthreads: expected an integer"),
        ("log:\n  level: verbose\n", "log.level: expected one of error, warn, info, debug"),
        ("log:\n  formatter: xml\n", "log.formatter: expected text, json or logstash"),
        ("log:\n  fields: [a]\n", "log.fields: expected a mapping"),
        ("log:\n  accesslog: {disabled: often}\n", "log.accesslog.disabled: expected a boolean"),
        ("loglevel: loud\n", "loglevel: expected one of"),
        ("http:\n  addr: '5000'\n", "http.addr: missing port"),
        ("http:\n  addr: ':0'\n", "http.addr: invalid port '0'"),
        ("http:\n  addr: ':65536'\n", "http.addr: invalid port '65536'"),
        ("http:\n  addr: '::1:5000'\n", "http.addr: too many colons"),
        ("http:\n  net: udp\n", "http.net: expected tcp, got 'udp'"),
        ("http:\n  host: registry.example.com\n", "http.host: expected an absolute URL"),
        ("http:\n  relativeurls: sometimes\n", "http.relativeurls: expected a boolean"),
        ("http:\n  headers: [nosniff]\n", "http.headers: expected a mapping"),
        ("http:\n  headers:\n    X-A: {b: c}\n", "http.headers.X-A: expected a string"),
        ("http:\n  draintimeout: soon\n", "http.draintimeout: invalid duration 'soon'"),
        (
            "validation:\n  manifests:\n    urls:\n      allow: ['^https://(']\n",
            "validation.manifests.urls.allow[0]: invalid regular expression",
        ),
        (
            "validation:\n  manifests:\n    indexes: {platforms: some}\n",
            "validation.manifests.indexes.platforms: expected all, none or list",
        ),
        (
            "validation:\n  manifests:\n    indexes:\n      platformlist: [{os: linux}]\n",
            "validation.manifests.indexes.platformlist[0]: needs both architecture and os",
        ),
        ("validation:\n  disabled: 'no way'\n", "validation.disabled: expected a boolean"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, MINIMAL + extra)
    assert str(info.value).startswith(message)


def test_invalid_value_from_environment_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^storage\.delete\.enabled: expected a boolean"):
        load_text(tmp_path, MINIMAL, {"REGISTRY_STORAGE_DELETE_ENABLED": "maybe"})


# --------------------------------------------------------------------------- sections


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("middleware:\n  registry:\n    - name: cloudfront\n", "middleware.registry"),
        ("policy:\n  repository:\n    classes: [image]\n", "policy.repository"),
        ("log:\n  hooks:\n    - {type: mail, levels: [panic]}\n", "log.hooks"),
        ("http:\n  tls:\n    letsencrypt: {cachefile: /le}\n", "http.tls.letsencrypt"),
        ("http:\n  letsencrypt: {cachefile: /le}\n", "http.letsencrypt"),
        ("http:\n  net: unix\n  addr: :5000\n", "http.net"),
    ],
)
def test_unsupported_sections_are_refused_by_name(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match="not supported yet") as info:
        load_text(tmp_path, MINIMAL + text)
    assert info.value.key == key
    assert str(info.value).startswith(key + ":")


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("  azure: {accountname: a}\n", "storage driver 'azure' is not supported yet"),
        ("  gcs: {bucket: b}\n", "storage driver 'gcs' is not supported yet"),
        ("  swift: {}\n", "storage driver 'swift' is not supported yet"),
        ("  oss: {}\n", "storage driver 'oss' is not supported yet"),
        ("  floppy: {}\n", "unknown storage driver 'floppy'"),
        ("  delete: {enabled: true}\n", "no storage driver configured"),
        ("  filesystem: {}\n  inmemory: {}\n", "exactly one storage driver expected, got "),
        (
            "  inmemory:\n  cache: {blobdescriptor: redis}\n",
            "storage.cache: redis needs a redis section with an addr",
        ),
    ],
)
def test_storage_drivers(tmp_path: Path, storage: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_text(tmp_path, "version: 0.1\nstorage:\n" + storage)


def test_two_drivers_error_names_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="filesystem, inmemory"):
        load_text(tmp_path, "version: 0.1\nstorage:\n  inmemory: {}\n  filesystem: {}\n")


def test_missing_storage_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^storage: no storage driver configured"):
        load_text(tmp_path, "version: 0.1\nhttp:\n  addr: :5000\n")


def test_harmless_sections_are_accepted(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent(
        """\
        health:
          storagedriver: {enabled: true, interval: 10s, threshold: 3}
        reporting:
          bugsnag: {apikey: k}
        compatibility:
          schema1: {enabled: false}
        catalog:
          maxentries: 100
        auth: {}
        redis: {}
        proxy: {remoteurl: ''}
        middleware: {}
        notifications:
          events: {includereferences: true}
          endpoints:
            - {name: off, url: 'http://x/', disabled: true}
        http:
          tls: {}
          http2: {disabled: true}
          draintimeout: 1m30s
        """
    )
    config = load_text(tmp_path, text)
    assert config.http.http2_disabled is True
    assert config.http.draintimeout == 90.0
    assert config.raw["catalog"] == {"maxentries": 100}


def test_filesystem_params_are_normalised(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL + "    maxthreads: 10\n")
    assert config.storage.params == {
        "rootdirectory": "/srv/registry", "maxthreads": 25, "fsync": False,
    }  # fmt: skip
    config = load_text(tmp_path, "version: 0.1\nstorage:\n  filesystem:\n")
    assert config.storage.params == {
        "rootdirectory": "/var/lib/registry", "maxthreads": 100, "fsync": False,
    }  # fmt: skip


def test_filesystem_fsync_is_a_boolean(tmp_path: Path) -> None:
    """cargohold's durability switch (README, "Durability"): true, or a Go boolean string."""
    assert load_text(tmp_path, MINIMAL + "    fsync: true\n").storage.params["fsync"] is True
    assert load_text(tmp_path, MINIMAL + '    fsync: "1"\n').storage.params["fsync"] is True
    with pytest.raises(ConfigError, match=r"storage\.filesystem\.fsync"):
        load_text(tmp_path, MINIMAL + "    fsync: sometimes\n")


def test_storage_options(tmp_path: Path) -> None:
    text = MINIMAL + (
        "  delete: {enabled: true}\n"
        "  redirect: {disable: true}\n"
        "  cache: {layerinfo: inmemory}\n"
        "  maintenance:\n"
        "    uploadpurging: {enabled: true, age: 1h30m, interval: 30m, dryrun: true}\n"
        "    readonly: {enabled: true}\n"
    )
    storage = load_text(tmp_path, text).storage
    assert storage.delete_enabled is True
    assert storage.redirect_disable is True
    assert storage.readonly is True
    assert storage.cache_blobdescriptor == "inmemory"
    assert (storage.purging.age, storage.purging.interval) == (5400.0, 1800.0)
    assert storage.purging.dryrun is True


def test_upload_purging_can_be_disabled_and_keeps_defaults(tmp_path: Path) -> None:
    text = MINIMAL + "  maintenance:\n    uploadpurging: {enabled: false}\n"
    purging = load_text(tmp_path, text).storage.purging
    assert purging.enabled is False
    assert purging.age == 168 * 3600


def test_log_section(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cargohold.config")
    text = MINIMAL + textwrap.dedent(
        """\
        log:
          level: DEBUG
          formatter: logstash
          fields: {service: registry}
          accesslog: {disabled: true}
        """
    )
    log = load_text(tmp_path, text).log
    assert (log.level, log.formatter) == ("debug", "json")
    assert log.fields == {"service": "registry"}
    assert log.accesslog_disabled is True
    assert any("logstash" in r.getMessage() for r in caplog.records)


def test_deprecated_top_level_loglevel_is_a_fallback(tmp_path: Path) -> None:
    assert load_text(tmp_path, MINIMAL + "loglevel: warn\n").log.level == "warn"
    text = MINIMAL + "loglevel: warn\nlog:\n  level: error\n"
    assert load_text(tmp_path, text).log.level == "error"


def test_http_section(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent(
        """\
        http:
          addr: '[::1]:5443'
          net: tcp
          prefix: /registry/
          host: https://registry.example.com/
          secret: s3cr3t
          relativeurls: true
          headers:
            X-Content-Type-Options: nosniff
            Cache-Control: [no-cache, no-store]
        """
    )
    http = load_text(tmp_path, text).http
    assert http.bind == ("::1", 5443)
    assert http.prefix == "/registry"
    assert http.host == "https://registry.example.com"
    assert http.secret == "s3cr3t"
    assert http.relativeurls is True
    assert http.headers == {
        "X-Content-Type-Options": ["nosniff"],
        "Cache-Control": ["no-cache", "no-store"],
    }


def test_validation_section(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent(
        """\
        validation:
          manifests:
            urls:
              allow: ['^https?://([^/]+\\.)*example\\.com/']
              deny: ['^https?://www\\.example\\.com/']
            indexes:
              platforms: list
              platformlist:
                - {architecture: amd64, os: linux}
        """
    )
    validation = load_text(tmp_path, text).validation
    assert validation.disabled is False
    assert validation.urls_allow == ["^https?://([^/]+\\.)*example\\.com/"]
    assert validation.urls_deny == ["^https?://www\\.example\\.com/"]
    assert validation.indexes_platforms == "list"
    assert validation.indexes_platformlist == [{"architecture": "amd64", "os": "linux"}]


@pytest.mark.parametrize(
    ("section", "disabled"),
    [
        ("validation: {disabled: true}\n", True),
        # registry:2 computes enabled = enabled || !disabled: `enabled: false` alone is a no-op.
        ("validation: {enabled: false}\n", False),
        ("validation: {enabled: true, disabled: true}\n", False),
        ("validation: {enabled: false, disabled: true}\n", True),
    ],
)
def test_validation_disabled_follows_registry2(
    tmp_path: Path, section: str, disabled: bool
) -> None:
    assert load_text(tmp_path, MINIMAL + section).validation.disabled is disabled


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("168h", 604800.0),
        ("24h", 86400.0),
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("100us", 1e-4),
        ("100\u00b5s", 1e-4),
        ("5ns", 5e-9),
        ("1h1m1s", 3661.0),
        ("0", 0.0),
        ("-1m", -60.0),
        ("+2h", 7200.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "h", "1h 30m", "abc", "-", "1.5", "1hh"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        (":5000", ("", 5000)),
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("[::1]:5000", ("::1", 5000)),
        ("[::]:443", ("::", 443)),
        ("registry.local:65535", ("registry.local", 65535)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_parse_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


@pytest.mark.parametrize(
    "addr", ["5000", ":0", ":65536", "::1:5000", "[::1]5000", "[::1", ":http", "host:", ""]
)
def test_parse_addr_rejects(addr: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(addr)


# --------------------------------------------------------------------------- the Debian package


@pytest.mark.skipif(not DEBIAN_CONFIG.exists(), reason="docker-registry package not installed")
def test_debian_packaged_config(tmp_path: Path) -> None:
    """registry:2's packaged config loads, its htpasswd auth included."""
    packaged = load_config(str(DEBIAN_CONFIG), {})
    assert packaged.auth.htpasswd is not None

    raw = yaml.safe_load(DEBIAN_CONFIG.read_text())
    raw.pop("auth", None)
    stripped = tmp_path / "config.yml"
    stripped.write_text(yaml.safe_dump(raw))
    config = load_config(str(stripped), {})
    fs = raw["storage"]["filesystem"]
    assert config.storage.driver == "filesystem"
    assert config.storage.rootdirectory == fs["rootdirectory"]
    assert config.http.addr == raw["http"]["addr"]
    assert config.http.headers == {
        str(k): [str(x) for x in v] for k, v in raw["http"]["headers"].items()
    }
    assert config.storage.delete_enabled is bool(raw["storage"].get("delete", {}).get("enabled"))
    assert config.log.fields == raw["log"]["fields"]


@pytest.mark.skipif(not DEBIAN_CONFIG.exists(), reason="docker-registry package not installed")
def test_debian_packaged_config_with_auth_overridden_away(tmp_path: Path) -> None:
    """An operator can point cargohold at the packaged file and override its storage root."""
    raw = yaml.safe_load(DEBIAN_CONFIG.read_text())
    raw.pop("auth", None)
    stripped = tmp_path / "config.yml"
    stripped.write_text(yaml.safe_dump(raw))
    environ = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": os.fspath(tmp_path / "data")}
    config = load_config(str(stripped), environ)
    assert config.storage.rootdirectory == str(tmp_path / "data")

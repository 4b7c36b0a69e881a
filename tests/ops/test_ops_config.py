"""The configuration of the operations features: registry:2's keys and cargohold's extensions."""

from __future__ import annotations

from pathlib import Path

import pytest

from cargohold.config import ConfigError, load_config

MINIMAL = "version: 0.1\nstorage:\n  inmemory: {}\n"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "config.yml"
    path.write_text(MINIMAL + text)
    return load_config(str(path), env or {})


def test_notification_endpoints_with_registry2_defaults(tmp_path):
    config = load(
        tmp_path,
        """
notifications:
  events: {includereferences: true}
  endpoints:
    - name: alistener
      url: https://example.invalid/hook
      headers: {Authorization: [Bearer x]}
      timeout: 500ms
      threshold: 5
      backoff: 2s
      ignoredmediatypes: [application/octet-stream]
      ignore:
        mediatypes: [application/vnd.oci.image.index.v1+json]
        actions: [pull]
    - {name: defaults, url: 'http://127.0.0.1:9/'}
    - {name: off, url: 'http://127.0.0.1:9/', disabled: true}
""",
    )
    first, second = config.notifications.endpoints
    assert config.notifications.include_references is True
    assert (first.timeout, first.threshold, first.backoff) == (0.5, 5, 2.0)
    assert first.headers == {"Authorization": ["Bearer x"]}
    assert first.ignored_mediatypes == [
        "application/octet-stream",
        "application/vnd.oci.image.index.v1+json",
    ]
    assert first.ignored_actions == ["pull"]
    assert (second.timeout, second.threshold, second.backoff) == (1.0, 10, 1.0)


def test_environment_overrides_reach_endpoints_and_gc(tmp_path):
    env = {
        "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL": "http://127.0.0.1:9/x",
        "REGISTRY_STORAGE_MAINTENANCE_GC_ENABLED": "true",
        "REGISTRY_STORAGE_MAINTENANCE_GC_GRACEPERIOD": "2h",
        "REGISTRY_HTTP_DEBUG_ADDR": "127.0.0.1:5001",
        "REGISTRY_RETENTION_POLICIES_0_KEEPLAST": "3",
    }
    text = "notifications:\n  endpoints:\n    - {name: a, url: 'http://h/'}\n"
    text += "retention:\n  policies:\n    - {repositories: '*'}\n"
    config = load(tmp_path, text, env)
    assert config.notifications.endpoints[0].url == "http://127.0.0.1:9/x"
    assert config.storage.gc.enabled and config.storage.gc.graceperiod == 7200.0
    assert config.debug.addr == "127.0.0.1:5001"
    assert config.retention is not None and config.retention.policies[0].keep_last == 3


def test_gc_and_retention_defaults(tmp_path):
    config = load(tmp_path, "")
    gc = config.storage.gc
    assert (gc.enabled, gc.interval, gc.graceperiod, gc.deleteuntagged) == (
        False,
        86400,
        3600,
        False,
    )
    assert config.retention is None and config.debug.addr == ""
    config = load(
        tmp_path,
        "retention:\n  policies:\n    - repositories: 'a/*'\n      keep_within: 720h\n"
        "      keep_tags: ['^v', 'latest']\n",
    )
    policy = config.retention.policies[0]
    assert policy.keep_within == 720 * 3600.0
    assert policy.keep_tags == "(?:^v)|(?:latest)"
    assert policy.keep_last is None and policy.delete_untagged is False


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("notifications:\n  endpoints:\n    - {name: a, url: 'ftp://x/'}\n", "url"),
        ("http:\n  debug:\n    addr: nonsense\n", "http.debug.addr"),
        ("storage:\n  inmemory: {}\n  maintenance:\n    gc: {interval: soon}\n", "gc.interval"),
        ("retention:\n  policies:\n    - {keep_last: 2}\n", "retention.policies[0]"),
        ("retention:\n  policies:\n    - {repositories: '*', keep_tags: '('}\n", "keep_tags"),
        ("retention:\n  policies:\n    - {repositories: '*', keep_last: -1}\n", "keep_last"),
    ],
)
def test_invalid_values_name_the_key(tmp_path, text, key):
    path = tmp_path / "config.yml"
    body = text if text.startswith("storage") else MINIMAL + text
    path.write_text(("version: 0.1\n" + body) if text.startswith("storage") else body)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert key in str(info.value)

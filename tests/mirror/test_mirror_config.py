"""The ``proxy`` section and the ``mirrors`` list: what is accepted, and what stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from cargohold.config import ConfigError, load_config
from cargohold.config.values import byte_size

MINIMAL = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /srv/registry\n"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yml"
    path.write_text(MINIMAL + text)
    return load_config(str(path), env or {})


def test_proxy_section_as_registry2_reads_it(tmp_path: Path) -> None:
    c = load(tmp_path, "proxy:\n  remoteurl: https://registry-1.docker.io\n  ttl: 72h\n")
    root = c.mirrors.root
    assert root is not None and root.prefix == "" and root.ttl == 72 * 3600
    assert root.remoteurl == "https://registry-1.docker.io"
    env = {
        "REGISTRY_PROXY_REMOTEURL": "https://mirror.example:443/",
        "REGISTRY_PROXY_USERNAME": "u",
        "REGISTRY_PROXY_PASSWORD": "p",
    }
    c = load(tmp_path, "", env)
    assert c.mirrors.root is not None
    assert (c.mirrors.root.remoteurl, c.mirrors.root.username, c.mirrors.root.password) == (
        "https://mirror.example:443",
        "u",
        "p",
    )
    assert load(tmp_path, "proxy: {remoteurl: ''}\n").mirrors.entries == []


def test_mirrors_entries_take_environment_overrides(tmp_path: Path) -> None:
    text = "mirrors:\n  - {prefix: hub, remoteurl: 'https://registry-1.docker.io'}\n"
    c = load(
        tmp_path, text, {"REGISTRY_MIRRORS_0_PASSWORD": "from-env", "REGISTRY_MIRRORS_0_TTL": "1h"}
    )
    (hub,) = c.mirrors.entries
    assert (hub.password, hub.ttl) == ("from-env", 3600)


def test_mirrors_list(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    c = load(
        tmp_path,
        f"""mirrors:
  - prefix: hub
    remoteurl: https://registry-1.docker.io
    username: me
    passwordfile: {secret}
    repositories: ["library/**"]
    tagfreshness: 1m
    maxsize: 20GiB
    prefetch:
      - repository: library/alpine
        tags: ["3\\\\..*", latest]
  - prefix: ghcr/io
    remoteurl: http://127.0.0.1:5001
    insecure: true
""",
    )
    hub, ghcr = c.mirrors.entries
    assert (hub.prefix, hub.password, hub.repositories) == ("hub", "s3cr3t", ("library/**",))
    assert hub.tagfreshness == 60 and hub.maxsize == 20 * 1024**3
    assert hub.prefetch[0].repository == "library/alpine"
    assert hub.prefetch[0].tags == (r"3\..*", "latest")
    assert ghcr.prefix == "ghcr/io" and ghcr.insecure and c.mirrors.root is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("proxy:\n  username: x\n", "proxy.remoteurl"),
        ("proxy:\n  remoteurl: ftp://x\n", "proxy.remoteurl"),
        ("mirrors:\n  - remoteurl: https://x\n", "mirrors[0].prefix"),
        ("mirrors:\n  - {prefix: Hub!, remoteurl: 'https://x'}\n", "mirrors[0].prefix"),
        (
            "mirrors:\n  - {prefix: hub, remoteurl: 'https://x'}\n"
            "  - {prefix: hub/sub, remoteurl: 'https://y'}\n",
            "mirrors[1].prefix",
        ),
        ("mirrors:\n  - {prefix: hub, remoteurl: 'https://x', ttl: 3}\n", "mirrors[0].ttl"),
        (
            "mirrors:\n  - {prefix: hub, remoteurl: 'https://x', passwordfile: /nonexistent}\n",
            "mirrors[0].passwordfile",
        ),
        (
            "mirrors:\n  - {prefix: hub, remoteurl: 'https://x', maxsize: lots}\n",
            "mirrors[0].maxsize",
        ),
        (
            "proxy: {remoteurl: 'https://x'}\nmirrors:\n  - {prefix: hub, remoteurl: 'https://y'}\n",
            "mirrors[0]",
        ),
    ],
)
def test_bad_mirror_settings_stop_the_start(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.key == key


def test_sizes() -> None:
    assert byte_size("512MiB", "k") == 512 * 1024**2
    assert byte_size("2GB", "k") == 2 * 1000**3
    assert byte_size(1234, "k") == 1234
    assert byte_size("1.5g", "k") == 1_500_000_000

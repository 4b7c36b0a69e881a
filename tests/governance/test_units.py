"""The governance sections' parsing and the rule lookups, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cargohold.config import Config, ConfigError, load_config, parse_size
from cargohold.registry.governance import Governance, Rules


def _load(tmp_path: Path, extra: dict[str, object]) -> Config:
    path = tmp_path / "config.yml"
    base = {"version": 0.1, "storage": {"filesystem": {"rootdirectory": str(tmp_path)}}}
    path.write_text(yaml.safe_dump({**base, **extra}))
    return load_config(str(path), {})


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10GiB", 10 * 1024**3),
        ("500MB", 500 * 1000**2),
        ("1.5KiB", 1536),
        ("2048", 2048),
        ("1 TiB", 1024**4),
        ("7k", 7000),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "10XB", "-1", "1e9"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_sections_parse(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        {
            "immutable": [{"repositories": "release/**", "tags": ["^v[0-9]", "^stable$"]}],
            "quotas": [
                {"repositories": "team/*", "size": "10GiB"},
                {"namespace": ["ci/**"], "size": 1000},
            ],
            "log": {"audit": {"path": "-"}},
        },
    )
    rules = Rules.of(config)
    assert rules.immutable_rule("release/app", "v1.2") == 0
    assert rules.immutable_rule("release/a/b", "stable") == 0
    assert rules.immutable_rule("release/app", "latest") is None
    assert rules.immutable_rule("team/app", "v1") is None
    assert [i for i, _ in rules.quota_rules("team/app")] == [0]
    assert rules.quota_rules("team/app/deeper") == []
    ((index, rule),) = rules.quota_rules("ci/x/y")
    assert index == 1 and rule.namespace and rule.size == 1000
    assert config.log.audit_path == "-"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"immutable": [{"repositories": "a/**"}]}, "immutable[0].tags"),
        ({"immutable": [{"tags": "^v"}]}, "immutable[0].repositories"),
        ({"immutable": [{"repositories": "a", "tags": "(unclosed"}]}, "immutable[0].tags[0]"),
        ({"immutable": {"repositories": "a"}}, "immutable"),
        ({"quotas": [{"repositories": "a", "size": "lots"}]}, "quotas[0].size"),
        ({"quotas": [{"repositories": "a", "size": 0}]}, "quotas[0].size"),
        ({"quotas": [{"size": "1GiB"}]}, "quotas[0]"),
        ({"quotas": [{"repositories": "a", "namespace": "b", "size": 1}]}, "quotas[0]"),
    ],
)
def test_sections_refused_with_the_key(tmp_path: Path, extra: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, extra)
    assert info.value.key == key


def test_quotas_need_filesystem_storage(tmp_path: Path) -> None:
    from cargohold.registry.core import Registry

    config = load_config(None, {"REGISTRY_STORAGE": "inmemory"}, default_root=str(tmp_path))
    config.quotas = _load(tmp_path, {"quotas": [{"repositories": "a", "size": 1}]}).quotas
    with pytest.raises(ConfigError, match="quotas"):
        Registry(config)


def test_governance_replaces_rules_whole(tmp_path: Path) -> None:
    before = _load(tmp_path, {"immutable": [{"repositories": "**", "tags": "^v"}]})
    after = _load(tmp_path, {})
    governance = Governance(before)
    seen: list[tuple[int, int]] = []
    governance.on_change(lambda old, new: seen.append((old.generation, new.generation)))
    first = governance.rules
    governance.replace(after)
    assert first.immutable_rule("x", "v1") == 0  # a request holding the old snapshot keeps it
    assert governance.rules.immutable_rule("x", "v1") is None
    assert seen == [(0, 1)]

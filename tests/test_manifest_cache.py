"""The per-process cache of parsed manifests stays within its bounds, pushes included."""

from __future__ import annotations

import json

import pytest

from cargohold.config.model import ValidationConfig
from cargohold.digest import Digest
from cargohold.registry import manifests
from cargohold.registry.manifests import ManifestStore, parse_manifest
from cargohold.storage.inmemory import InMemoryDriver


def _manifest(i: int, pad: int = 0) -> manifests.Manifest:
    layer = Digest("sha256", f"{i:064x}")
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": str(layer),
            "size": 2,
        },
        "layers": [],
        "annotations": {"pad": "x" * pad},
    }
    return parse_manifest(json.dumps(doc).encode(), None)


def _store() -> ManifestStore:
    return ManifestStore(InMemoryDriver(), None, ValidationConfig())  # type: ignore[arg-type]


def test_entries_bound_applies_to_pushes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifests, "CACHE_ENTRIES", 4)
    store = _store()
    made = [_manifest(i) for i in range(10)]
    for m in made:
        store._remember(m)  # what a push does once the manifest is written
    assert list(store._cache) == [m.digest for m in made[-4:]]
    assert store._cache_bytes == sum(len(m.data) for m in made[-4:])
    store._remember(made[6])  # remembered again: most recently used, counted once
    assert list(store._cache)[-1] == made[6].digest
    assert store._cache_bytes == sum(len(m.data) for m in made[-4:])
    store.forget({made[6].digest})
    assert made[6].digest not in store._cache
    assert store._cache_bytes == sum(len(m.data) for m in (made[7], made[8], made[9]))


def test_bytes_bound_keeps_at_least_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifests, "CACHE_BYTES", 3000)
    store = _store()
    small = [_manifest(i, 100) for i in range(3)]
    for m in small:
        store._remember(m)
    assert len(store._cache) == 3
    big = _manifest(99, 5000)  # alone over the budget: kept, everything older evicted
    store._remember(big)
    assert list(store._cache) == [big.digest]
    assert store._cache_bytes == len(big.data)

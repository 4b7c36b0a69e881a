"""The mirror's own files do not pile up: fetch lock files go when their fetch is done, and the
hit/miss statistics files of processes that are gone are folded into a live one's."""

from __future__ import annotations

import json
import os
import time

from support.waiting import eventually

from .conftest import mirror_entry, seed_upstream
from .test_mirror_pull import _pull
from .test_mirror_upkeep import _du

FETCH_DIR = "docker/registry/v2/_cargohold/mirror/fetch"
STATS_DIR = "docker/registry/v2/_cargohold/mirror/stats/hub"


def _locks(root) -> list[str]:  # type: ignore[no-untyped-def]
    d = root / FETCH_DIR
    return sorted(p.name for p in d.iterdir() if p.suffix in (".lock", ".mlock"))


def test_fetch_lock_files_are_removed_when_done(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1351, layer_count=3)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]}, workers=2)
    for _ in range(3):  # blobs fetched, manifest fetched, the tag checked on both workers
        _pull(reg.url, f"hub/{remote}", "latest")
    assert proxy.count("GET", "/blobs/") == 4  # config and 3 layers, once each
    # Every lock was taken (the fetch dir exists) and none is left behind.
    assert (reg.root / FETCH_DIR).is_dir()
    eventually(lambda: _locks(reg.root) == [], timeout=30)


def test_statistics_of_stopped_processes_are_folded(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1352)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]}, workers=2)
    _pull(reg.url, f"hub/{remote}", "latest")  # 3 misses
    _pull(reg.url, f"hub/{remote}", "latest")  # 3 hits
    reg.stop()  # each worker writes its last counts, marked final
    stats = reg.root / STATS_DIR
    before = set(os.listdir(stats))
    assert before  # at least the worker that served
    # A process that crashed (no final flush; its file not rewritten for hours), and a live
    # worker of another replica (recent, not final): the first is folded, the second stays.
    crashed, live = stats / "1-crashed0", stats / "zz-livereplica"
    crashed.write_text(json.dumps({"hits": 5, "misses": 1}))
    old = time.time() - 7 * 3600
    os.utime(crashed, (old, old))
    live.write_text(json.dumps({"hits": 2, "misses": 0, "adopter": False, "final": False}))
    totals = _du(str(reg.config_path))["mirrors"][0]
    assert (totals["hits"], totals["misses"]) == (3 + 5 + 2, 3 + 1)

    reg.restart()
    # The new worker 0 folds the stopped processes' files into its own.
    eventually(lambda: not (before | {crashed.name}) & set(os.listdir(stats)), timeout=90)
    assert live.exists()
    totals = _du(str(reg.config_path))["mirrors"][0]
    assert (totals["hits"], totals["misses"]) == (3 + 5 + 2, 3 + 1)
    # And a later restart folds that run's file in turn: files do not grow with restarts.
    first_run = set(os.listdir(stats)) - {live.name}
    assert first_run
    reg.restart()
    eventually(lambda: not first_run & set(os.listdir(stats)), timeout=90)
    assert live.exists()
    totals = _du(str(reg.config_path))["mirrors"][0]
    assert (totals["hits"], totals["misses"]) == (3 + 5 + 2, 3 + 1)

"""The soak of bench/soak.py for one minute (the full run is 10): a two-worker server under
mixed push / pull / delete / online GC, with fsck --repair run on the live store every 20 s,
answers no 5xx and no wrong byte; the live fscks find nothing; the store is fsck-clean (blobs
verified) at the end; every worker's caches run at the soak's scale (1/64 of the real bounds)
and stay within it. The memory slope is reported, not judged: a minute is mostly warm-up
(the 10-minute run judges it, see bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The real bounds (cargohold.memory.COSTS) at the soak's default CARGOHOLD_CACHE_SCALE of 1/64.
SCALED_BOUNDS = {
    "blob_verdicts": 1024,
    "small_files": 256,
    "manifests": 64,
    "link_digests": 64,
    "paths": 64,
    "manifest_headers": 64,
}


def test_one_minute_soak_has_no_5xx_and_ends_fsck_clean(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, "bench/soak.py", "--duration", "60", "--clients", "4",
         "--gc-interval", "15", "--online-fsck", "20", "--json", str(out),
         "--tmpdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    assert out.exists(), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    slope = result["rss_slope_mib_per_min"]
    print(f"soak: {result['requests']} requests, RSS slope {slope} MiB/min")
    assert result["memory_judged"] is False
    # every process of the tree (supervisor, 2 workers) is sampled and judged on its own
    by_process = result["rss_judged_by_process"]
    assert len(by_process) == 3, by_process
    for judged in by_process.values():
        assert judged["mib_end"] > 0 and isinstance(judged["flat"], bool), judged
    # Both workers published their caches (cargohold.memory) with the scaled bounds, the load
    # used them, and none is beyond its bound.
    caches = result["caches"]
    for name, bound in SCALED_BOUNDS.items():
        assert len(caches[name]) == 2, (name, caches[name])
        for entries, limit in caches[name].values():
            assert limit == bound and 0 <= entries <= limit, (name, caches[name])
    for name in ("manifests", "small_files", "blob_verdicts", "link_digests"):
        assert sum(entries for entries, _ in caches[name].values()) > 0, (name, caches[name])
    assert result["server_errors"] == 0, result["failures"]
    assert result["failures"] == []
    assert result["operations"].get("push", 0) > 0 and result["operations"].get("pull", 0) > 0
    assert result["operations"].get("gc", 0) >= 1
    # fsck --repair ran on the live store and found nothing to repair (or met a collection)
    ops = result["operations"]
    assert ops.get("online_fsck", 0) + ops.get("online_fsck_busy", 0) >= 1
    assert result["fsck_clean"] is True, result["fsck"]
    assert result["fsck"]["blobsVerified"] == result["fsck"]["blobs"] > 0
    assert proc.returncode == 0

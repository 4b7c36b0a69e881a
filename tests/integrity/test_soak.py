"""The soak of bench/soak.py for one minute (the full run is 10): a two-worker server under
mixed push / pull / delete / online GC, with fsck --repair run on the live store every 20 s,
answers no 5xx and no wrong byte; the live fscks find nothing; the store is fsck-clean (blobs
verified) at the end. The memory slope is reported, not judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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

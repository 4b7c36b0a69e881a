"""``bench/mirror_storm.py`` runs end to end (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "mirror_storm.py"


def test_mirror_storm_smoke(tmp_path: Path) -> None:
    if shutil.which("docker-registry") is None or shutil.which("curl") is None:
        pytest.skip("needs docker-registry and curl")
    out = tmp_path / "storm.json"
    args = ["--clients", "4", "--size-mib", "2", "--reps", "1", "--verify-every", "2"]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json", str(out), "--tmpdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    ours, theirs = report["runs"]["cargohold"][0], report["runs"]["registry:2"][0]
    assert ours["clients_verified"] == theirs["clients_verified"] == 4
    assert ours["upstream_blob_gets"] == 2  # config and layer, once each
    assert ours["upstream_images"] == 1.0
    assert {"cpu_mirror_s", "cpu_upstream_s", "cpu_clients_s"} <= ours.keys()
    assert "| Wall time (s) |" in proc.stdout

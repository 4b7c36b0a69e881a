"""End to end: ``python bench/run.py --quick`` against cargohold and the reference registry:2.

Checks that the harness runs every workload on both servers, produces positive numbers
and leaves nothing running.  It asserts nothing about speed: targets are for the full
benchmark, whose results live in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every metric bench/run.py reports (see METRICS there).
EXPECTED_METRICS = (
    "rss_idle",
    "pss_idle",
    "upload_monolithic",
    "upload_chunked",
    "download_single",
    "download_parallel",
    "manifest_get",
    "blob_head",
    "tags_list",
    "catalog",
    "upload_storm_peak_rss",
    "upload_storm_peak_pss",
    "upload_storm_wall",
    "pull_storm_wall",
    "pull_storm_peak_rss",
    "pull_storm_peak_pss",
)
SERVERS = ("cargohold", "registry2")
TOOLS = {
    "docker-registry": "the reference registry:2 (apt-get install docker-registry)",
    "wrk": "the HTTP load generator (apt-get install wrk)",
    "ab": "ApacheBench, for HEAD load (apt-get install apache2-utils)",
}


def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    missing = [f"{tool}: {why}" for tool, why in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        pytest.skip("benchmark needs tools that are not installed: " + "; ".join(missing))

    out = tmp_path / "bench.json"
    argv = [
        sys.executable,
        "bench/run.py",
        "--quick",
        "--json",
        str(out),
        "--tmpdir",
        str(tmp_path),
    ]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output

    report = json.loads(out.read_text())
    results = report["results"]
    assert sorted(results) == sorted(EXPECTED_METRICS), output
    for metric in EXPECTED_METRICS:
        entry = results[metric]
        for server in SERVERS:
            value = entry[server]["value"]
            assert entry[server]["error"] is None, (metric, server, entry[server]["error"])
            assert isinstance(value, float | int) and value > 0, (metric, server, value)
            assert len(entry[server]["samples"]) == report["reps"], (metric, server)
        assert entry["ratio"] is not None and entry["ratio"] > 0, metric
        assert entry["status"] in ("pass", "fail", "info"), metric

    # The table went to stdout; no server (nor worker) is left running; storage is gone.
    assert "| Metric" in proc.stdout
    assert _processes_mentioning(str(tmp_path)) == []
    assert not list(tmp_path.glob("cargohold-bench-*"))


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (the servers' config paths do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found

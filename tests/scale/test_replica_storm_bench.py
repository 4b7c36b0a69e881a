"""``bench/replica_storm.py`` runs end to end at toy size (a smoke test, not a measurement): both
servers, both redirect variants, every client's blobs verified, redirects followed when on; and
the null replica (``--null``: haproxy alone answers the manifest and the 307s) pulled through by
the same clients in the same way."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.ceph import rgw_available
from support.stores import haproxy_binary

BENCH = Path(__file__).resolve().parents[2] / "bench" / "replica_storm.py"


def run_bench(tmp_path: Path, args: list[str]) -> tuple[subprocess.CompletedProcess[str], Any]:
    """The bench at toy size in its own process; it must exit 0 (every client verified)."""
    out = tmp_path / "storm.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json", str(out), "--tmpdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_replica_storm_smoke(tmp_path: Path) -> None:
    if shutil.which("docker-registry") is None or haproxy_binary() is None:
        pytest.skip("needs docker-registry and haproxy")
    args = ["--clients", "5", "--layers", "2", "--layer-mib", "0.25", "--reps", "1", "--null"]
    proc, report = run_bench(tmp_path, args)
    for variant, redirects in (("off", 0), ("on", 5 * 3)):  # config + 2 layers per client
        for server in ("cargohold", "registry:2"):
            (run,) = report["runs"][variant][server]
            assert run["clients_verified"] == 5 and not run["errors"], (variant, server, run)
            assert run["redirects"] == redirects, (variant, server, run)
            assert run["rss_peak_mib"] > 0 and run["wall_s"] > 0, run
        assert report["summary"][variant]["wall_s"]["ratio"] > 0
    assert "null" not in report["runs"]["off"]  # without redirects a replica serves the bytes
    (null,) = report["runs"]["on"]["null"]
    assert null["clients_verified"] == 5 and not null["errors"] and not null["hung"], null
    assert null["redirects"] == 5 * 3, null
    # No replica: nothing to cost; moto served every blob byte to the clients.
    assert null["replica_cpu_s"] == 0 and null["rss_peak_mib"] == 0, null
    assert null["rss_peak_each_mib"] == [], null
    # The same client path: every server made the clients open the same connections.
    connects = {s: r[0]["client_connects"] for s, r in report["runs"]["on"].items()}
    assert len(set(connects.values())) == 1 and connects["null"] >= 5, connects
    assert report["summary"]["on"]["wall_s"]["null_ratio"] > 0
    assert "| on | Wall time (s) |" in proc.stdout and "null / registry:2" in proc.stdout
    assert not list(tmp_path.glob("replica-storm-*")), "the run left its directory behind"


def test_replica_storm_smoke_with_the_blob_cache(tmp_path: Path) -> None:
    """``--blobcache``: the replicas get storage.cache.blobdir and the clients still verify
    every byte (the cache's own tests are tests/s3/test_blob_cache.py)."""
    if shutil.which("docker-registry") is None or haproxy_binary() is None:
        pytest.skip("needs docker-registry and haproxy")
    args = ["--clients", "8", "--layers", "2", "--layer-mib", "0.25", "--redirect", "off"]
    args += ["--blobcache", "--only", "cargohold"]
    proc, report = run_bench(tmp_path, args)
    assert report["blobcache"] is True
    (run,) = report["runs"]["off"]["cargohold"]
    assert run["clients_verified"] == 8 and not run["errors"], run
    assert "blob cache on" in proc.stdout
    assert not list(tmp_path.glob("replica-storm-*")), "the run left its directory behind"


def test_replica_storm_smoke_on_rgw(tmp_path: Path) -> None:
    """``--s3 rgw``: the same storm with Ceph's RADOS Gateway as the S3 server (one cluster for
    the bench, a bucket per run): redirects to RGW's presigned URLs followed and verified for
    all three servers, the gateway's CPU counted, the cluster gone afterwards."""
    if shutil.which("docker-registry") is None or haproxy_binary() is None or not rgw_available():
        pytest.skip("needs docker-registry, haproxy and Ceph (ceph-mon, ceph-osd, radosgw)")
    args = ["--clients", "4", "--layers", "2", "--layer-mib", "0.25", "--redirect", "on"]
    args += ["--null", "--s3", "rgw"]
    before = set(Path("/tmp").glob("storm-rgw-*"))
    _, report = run_bench(tmp_path, args)
    assert report["s3"] == "rgw"
    for server in ("cargohold", "registry:2", "null"):
        (run,) = report["runs"]["on"][server]
        assert run["clients_verified"] == 4 and not run["errors"], (server, run)
        assert run["redirects"] == 4 * 3, (server, run)
        assert "rgw_cpu_s" in run and "moto_cpu_s" not in run, (server, run)
    assert set(Path("/tmp").glob("storm-rgw-*")) <= before, "the Ceph cluster was left behind"


def test_rss_floor_measures_each_level(tmp_path: Path) -> None:
    """``bench/rss_floor.py``: fresh interpreters, each level holding more than the last (the
    S3 client's service model and endpoint tables on top of aiohttp on top of the interpreter)."""
    out = tmp_path / "floor.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH.parent / "rss_floor.py"), "--reps", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    floor = json.loads(out.read_text())
    levels = ["python3", "+ aiohttp", "+ aiobotocore S3 client", "+ one presigned URL"]
    assert list(floor) == levels
    rss = [floor[level]["rss_mib"] for level in levels]
    assert 0 < rss[0] < rss[1] < min(rss[2], rss[3]), rss  # 2 and 3 differ by noise only
    assert all(0 < floor[level]["pss_mib"] <= floor[level]["rss_mib"] for level in levels)

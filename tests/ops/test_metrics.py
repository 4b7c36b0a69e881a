"""``http.debug.addr``: Prometheus ``/metrics``, right with one worker and with several."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.images import push_image
from support.servers import free_port, unique_repo

from .helpers import age_store, verify_image, wait_debug


def scrape(debug: str, path: str = "/metrics") -> list[tuple[str, dict[str, str], float]]:
    resp = requests.get(f"http://{debug}{path}", timeout=30)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    ]


def total(samples: list, name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_push_and_pull_move_the_numbers(make_registry, images, workers):
    debug = f"127.0.0.1:{free_port()}"
    reg = make_registry(config={"http": {"debug": {"addr": debug}}}, workers=workers)
    wait_debug(debug)
    repo = unique_repo("metrics")
    image = images.get(800, layer_count=2)
    before = scrape(debug)
    push_image(reg.url, repo, image, tag="t")
    verify_image(reg.url, repo, "t", image)
    verify_image(reg.url, repo, "t", image)
    # separate connections, so that with 2 workers both serve some
    for _ in range(30):
        assert requests.get(f"{reg.url}/v2/", timeout=10).status_code == 200
    after = scrape(debug)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    blobs = image.platforms[0].blobs
    blob_bytes = sum(b.size for b in blobs)
    assert delta("registry_http_requests_total", handler="base", method="GET", code="200") == 30
    assert delta("registry_http_requests_total", handler="manifest", method="PUT", code="201") == 1
    assert delta(
        "registry_http_requests_total", handler="blob_upload_chunk", method="PUT", code="201"
    ) == len(blobs)
    assert delta(
        "registry_http_requests_total", handler="blob", method="GET", code="200"
    ) == 2 * len(blobs)
    assert (
        delta("registry_http_request_size_bytes_total", handler="blob_upload_chunk") == blob_bytes
    )
    assert delta("registry_http_response_size_bytes_total", handler="blob") == 2 * blob_bytes
    assert (
        delta("registry_http_request_duration_seconds_count", handler="manifest", method="GET") == 2
    )
    assert delta("registry_storage_cache_total", cache="manifest") >= 2
    assert total(after, "cargohold_uploads_in_flight") == 0
    assert total(after, "registry_http_in_flight_requests", handler="blob") == 0
    # every worker publishes the bounds of its caches (cargohold.memory) when it starts: one
    # small-file cache each, with the real bound (not two: the registry serve() builds to check
    # the setup must not survive the fork)
    limits = [
        (lab["pid"], v)
        for n, lab, v in after
        if n == "cargohold_cache_limit" and lab["cache"] == "small_files"
    ]
    assert len({pid for pid, _ in limits}) == len(limits) == workers, limits
    assert all(v == 16384 for _, v in limits), limits

    # garbage collection runs and the bytes they free
    garbage = images.get(801)
    push_image(reg.url, repo, garbage, tag="g")
    assert requests.delete(f"{reg.url}/v2/{repo}/manifests/g").status_code == 202
    resp = requests.post(f"http://{debug}/admin/gc?wait=true&deleteuntagged=true", timeout=60)
    # nothing is older than the default grace period (1h): a run, but nothing freed
    assert resp.status_code == 200 and resp.json()["blobsDeleted"] == []
    final = scrape(debug)
    assert total(final, "cargohold_gc_runs_total", mode="manual", result="success") == 1
    assert total(final, "cargohold_gc_freed_bytes_total") == 0


def test_gc_freed_bytes_and_custom_path(make_registry, images):
    debug = f"127.0.0.1:{free_port()}"
    config = {
        "http": {"debug": {"addr": debug, "prometheus": {"enabled": True, "path": "/prom"}}},
        "storage": {"maintenance": {"gc": {"graceperiod": "0s", "settle": "0s"}}},
    }
    reg = make_registry(config=config, workers=2)
    wait_debug(debug)
    repo = unique_repo("metrics-gc")
    garbage = images.get(802)
    push_image(reg.url, repo, garbage, tag="g")
    assert requests.delete(f"{reg.url}/v2/{repo}/manifests/{garbage.digest}").status_code == 202
    age_store(reg.root)  # links written in the last seconds count as a push in progress
    report = requests.post(f"http://{debug}/admin/gc?wait=true", timeout=60).json()
    freed = sum(b.size for b in garbage.all_blobs())
    assert report["bytesFreed"] == freed
    samples = scrape(debug, "/prom")
    assert total(samples, "cargohold_gc_freed_bytes_total") == freed
    assert total(samples, "cargohold_gc_deleted_blobs_total") == 3
    assert requests.get(f"http://{debug}/metrics", timeout=10).status_code == 404

"""Quotas with real clients: the push that would pass the limit is refused with DENIED naming
the quota, the limit and the usage, while a smaller one fits; two workers pushing at once never
both squeeze past; uploads that can never fit are refused early; ``cargohold du`` and the metrics
show usage against the quota; ``du --rebuild`` recomputes it."""

from __future__ import annotations

import concurrent.futures
import json
import os
from collections.abc import Callable
from pathlib import Path

import requests
from support.clients import DockerDaemon, Skopeo
from support.images import ImageCache, TestImage
from support.servers import RegistryProcess, free_port, unique_repo

from .conftest import DockerLoad
from .helpers import (
    audit_lines,
    cli,
    error_of,
    find,
    image_config,
    push_blob,
    push_image,
    sha,
)

RegistryFactory = Callable[..., RegistryProcess]
KIB = 1024


def _size(image: TestImage) -> int:
    """What a push of ``image`` adds to an empty repository: manifest, config and layers."""
    return sum(blob.size for blob in image.all_blobs())


def test_skopeo_quota_refuses_the_push_that_passes_it(
    make_registry: RegistryFactory, skopeo: Skopeo, images: ImageCache, tmp_path: Path
) -> None:
    big, bigger, small = (
        images.get(seed=401, payload_size=300 * KIB),
        images.get(seed=402, payload_size=300 * KIB),
        images.get(seed=403, payload_size=20 * KIB),
    )
    limit = _size(big) + _size(small) + 50 * KIB  # room for big and small, not for bigger
    debug = f"127.0.0.1:{free_port()}"
    server = make_registry(
        config={
            "quotas": [{"repositories": "team/*", "size": str(limit)}],
            "log": {"level": "info", "audit": {"path": str(tmp_path / "audit.log")}},
            "http": {"debug": {"addr": debug}},
        }
    )
    sk = skopeo.with_logs(server)
    repo = unique_repo("team")
    ref = f"docker://{server.host}/{repo}"
    sk.copy(big.oci_ref(), f"{ref}:one")
    refused = sk.copy(bigger.oci_ref(), f"{ref}:two", check=False)
    assert refused.returncode != 0
    assert "denied" in refused.stderr and "quota exceeded" in refused.stderr, refused.stderr
    assert f"({_size(big)} of {limit} bytes)" in refused.stderr
    assert sk.list_tags(ref) == ["one"]
    sk.copy(small.oci_ref(), f"{ref}:three")  # fits beside the first
    assert sorted(sk.list_tags(ref)) == ["one", "three"]
    # the same image again, under another tag, costs nothing
    sk.copy(big.oci_ref(), f"{ref}:one-again")
    # another repository of the rule has a quota of its own
    sk.copy(bigger.oci_ref(), f"docker://{server.host}/{unique_repo('team')}:two")

    used = _size(big) + _size(small)
    du = json.loads(cli("du", str(server.config_path), "--json").stdout)
    entry = next(q for q in du["quotas"] if q["scope"] == repo)
    assert entry == {
        "rule": "quotas[0]",
        "kind": "repository",
        "scope": repo,
        "usage": used,
        "limit": limit,
    }
    text = cli("du", str(server.config_path), "--bytes").stdout
    assert f"{repo}  quotas[0]" in text and str(used) in text and str(limit) in text
    metrics = requests.get(f"http://{debug}/metrics", timeout=10).text
    labels = f'rule="quotas[0]",kind="repository",scope="{repo}"'
    assert f"cargohold_quota_usage_bytes{{{labels}}} {used}" in metrics
    assert f"cargohold_quota_limit_bytes{{{labels}}} {limit}" in metrics

    lines = find(audit_lines(tmp_path / "audit.log"), repository=repo, outcome="denied")
    assert lines and all("quota exceeded" in entry["reason"] for entry in lines)


def test_two_workers_pushing_at_once_never_both_pass(
    make_registry: RegistryFactory, skopeo: Skopeo, images: ImageCache
) -> None:
    pushes = [images.get(seed=410 + i, payload_size=200 * KIB) for i in range(4)]
    limit = max(_size(i) for i in pushes) + 100 * KIB  # any one fits, no two do
    server = make_registry(
        config={"quotas": [{"repositories": "race/*", "size": str(limit)}]}, workers=2
    )
    sk = skopeo.with_logs(server)
    repo = unique_repo("race")
    ref = f"docker://{server.host}/{repo}"
    with concurrent.futures.ThreadPoolExecutor(len(pushes)) as pool:
        results = list(
            pool.map(
                lambda i: sk.copy(i[1].oci_ref(), f"{ref}:t{i[0]}", check=False), enumerate(pushes)
            )
        )
    ok = [r for r in results if r.returncode == 0]
    assert len(ok) == 1, [r.stderr[-500:] for r in results]
    assert all("quota exceeded" in r.stderr for r in results if r.returncode != 0)
    assert len(sk.list_tags(ref)) == 1
    du = json.loads(cli("du", str(server.config_path), "--json").stdout)
    usage = next(q["usage"] for q in du["quotas"] if q["scope"] == repo)
    assert usage <= limit
    # the layers that were charged but refused count until a rebuild after GC; --rebuild
    # recomputes from the store, which holds the one image and the refused pushes' blobs
    rebuilt = json.loads(cli("du", str(server.config_path), "--json", "--rebuild").stdout)
    assert next(q["usage"] for q in rebuilt["quotas"] if q["scope"] == repo) <= limit


def test_namespace_quota_counts_shared_blobs_once(make_registry: RegistryFactory) -> None:
    limit = 300 * KIB
    server = make_registry(config={"quotas": [{"namespace": "ci/**", "size": str(limit)}]})
    layer = os.urandom(200 * KIB)
    first, second = unique_repo("ci/a"), unique_repo("ci/sub/b")
    assert push_image(server, first, "1", [layer]).status_code == 201
    # the same layer in another repository of the namespace is counted once
    assert push_image(server, second, "1", [layer]).status_code == 201
    # a new layer that passes the namespace's limit: refused at the blob's completion
    refused = push_blob(server, unique_repo("ci/c"), os.urandom(150 * KIB))
    assert refused.status_code == 403
    error = error_of(refused)
    assert error["code"] == "DENIED" and "namespace ci/**" in error["message"]
    assert error["detail"]["limit"] == limit and error["detail"]["usage"] > 200 * KIB
    # outside the namespace nothing is limited
    assert push_image(server, unique_repo("other"), "1", [os.urandom(400 * KIB)]).status_code == 201


def test_uploads_that_cannot_fit_are_refused_early(make_registry: RegistryFactory) -> None:
    limit = 100 * KIB
    server = make_registry(config={"quotas": [{"repositories": "**", "size": "100KiB"}]})
    repo = unique_repo("early")
    too_big = os.urandom(limit + 1)
    # POST ?digest= with a declared size past the limit: refused before the body is read
    r = requests.post(
        f"{server.url}/v2/{repo}/blobs/uploads/?digest={sha(too_big)}", data=too_big, timeout=30
    )
    assert r.status_code == 403 and "quota exceeded" in error_of(r)["message"]
    # a PATCH whose declared size passes it: refused; the upload itself stays usable
    start = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=10)
    url = server.url + start.headers["Location"]
    r = requests.patch(url, data=too_big, timeout=30)
    assert r.status_code == 403 and error_of(r)["code"] == "DENIED"
    fits = os.urandom(limit // 2)
    r = requests.patch(url, data=fits, timeout=30)
    assert r.status_code == 202
    done = server.url + r.headers["Location"]
    sep = "&" if "?" in done else "?"
    assert requests.put(f"{done}{sep}digest={sha(fits)}", timeout=30).status_code == 201
    # layers that fit, and a manifest that passes the limit: the manifest is refused before it
    # is stored (no tag, no revision) and what was there stays
    last = os.urandom(limit - len(fits) - len(image_config("big")) - 100)
    r = push_image(server, repo, "big", [fits, last])
    assert r.request.method == "PUT" and "/manifests/" in (r.request.url or "")
    assert r.status_code == 403 and "quota exceeded" in error_of(r)["message"]
    assert requests.get(f"{server.url}/v2/{repo}/manifests/big", timeout=10).status_code == 404
    for blob in (fits, last):
        head = requests.head(f"{server.url}/v2/{repo}/blobs/{sha(blob)}", timeout=10)
        assert head.status_code == 200


def test_usage_is_rebuilt_by_du_and_after_garbage_collection(
    make_registry: RegistryFactory, skopeo: Skopeo, images: ImageCache
) -> None:
    server = make_registry(config={"quotas": [{"repositories": "gc/*", "size": "10MiB"}]})
    image = images.get(seed=430, payload_size=100 * KIB)
    repo = unique_repo("gc")
    digest = skopeo.with_logs(server).copy_with_digest(
        image.oci_ref(), f"docker://{server.host}/{repo}:1"
    )

    def usage(*extra: str) -> int:
        du = json.loads(cli("du", str(server.config_path), "--json", *extra).stdout)
        return sum(q["usage"] for q in du["quotas"] if q["scope"] == repo)

    assert usage() == _size(image)
    # the index lost (or stale): --rebuild recomputes it from the store
    index = server.root / "docker/registry/v2/_cargohold/quota/usage.sqlite"
    server.stop()
    index.unlink()
    assert usage() == 0
    assert usage("--rebuild") == _size(image)
    server.start()
    # deleting the manifest frees only the manifest; garbage collection frees the rest
    deleted = requests.delete(f"{server.url}/v2/{repo}/manifests/{digest}", timeout=10)
    assert deleted.status_code == 202
    assert usage() == _size(image) - image.top.size
    server.stop()
    cli("garbage-collect", str(server.config_path))
    assert usage() == 0


def test_docker_push_past_the_quota(
    make_registry: RegistryFactory,
    dockerd: DockerDaemon,
    docker_load: DockerLoad,
    images: ImageCache,
) -> None:
    small, big = images.get(seed=440), images.get(seed=441, payload_size=400 * KIB)
    server = make_registry(config={"quotas": [{"repositories": "dock/*", "size": "200KiB"}]})
    repo = unique_repo("dock")
    for name, image in (("small", small), ("big", big)):
        dockerd.docker("tag", docker_load(image, name), f"{server.host}/{repo}:{name}")
    push = dockerd.docker("push", f"{server.host}/{repo}:big", check=False, logs=[server])
    output = push.stdout + push.stderr
    assert push.returncode != 0 and "denied: quota exceeded" in output, output
    assert "of its 200.0 KiB quota" in output
    assert dockerd.docker("push", f"{server.host}/{repo}:small", check=False).returncode == 0
    dockerd.docker("rmi", f"{server.host}/{repo}:big", f"{server.host}/{repo}:small")

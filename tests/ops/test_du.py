"""``cargohold du``: per-repository usage with shared blobs counted once, and what GC frees."""

from __future__ import annotations

import json

import requests
from support.images import push_image
from support.servers import unique_repo

from .helpers import blob_sizes, run_cli


def test_du_numbers_match_the_files(make_registry, images):
    reg = make_registry()
    a, b = unique_repo("dua"), unique_repo("dub")
    shared, only_a, multi = images.get(1100), images.get(1101), images.get(1102, multi_arch=True)
    garbage, untagged = images.get(1103), images.get(1104)
    push_image(reg.url, a, shared, tag="s")
    push_image(reg.url, b, shared, tag="s")
    push_image(reg.url, a, only_a, tag="o")
    push_image(reg.url, b, multi, tag="m")
    push_image(reg.url, b, garbage, tag="g")
    push_image(reg.url, b, untagged, tag="u")
    assert requests.delete(f"{reg.url}/v2/{b}/manifests/{garbage.digest}").status_code == 202
    assert requests.delete(f"{reg.url}/v2/{b}/manifests/u").status_code == 202
    upload = requests.post(f"{reg.url}/v2/{a}/blobs/uploads/", timeout=10)
    location = reg.url + upload.headers["Location"]
    assert requests.patch(location, data=b"z" * 1000, timeout=10).status_code == 202
    reg.stop()

    sizes = blob_sizes(reg.root)  # what is on disk, by digest

    def size_of(*imgs) -> int:
        return sum(sizes[d] for d in {x.digest for i in imgs for x in i.all_blobs()})

    report = json.loads(run_cli("du", str(reg.config_path), "--json").stdout)
    repos = {r["repository"]: r for r in report["repositories"]}
    assert repos[a]["size"] == size_of(shared, only_a)
    assert repos[a]["unique"] == size_of(only_a)
    assert repos[a]["shared"] == size_of(shared)
    assert repos[b]["size"] == size_of(shared, multi, untagged)
    assert repos[b]["unique"] == size_of(multi, untagged)
    assert repos[b]["shared"] == size_of(shared)
    assert (repos[a]["tags"], repos[b]["tags"]) == (2, 2)
    assert report["stored"] == sum(sizes.values())
    assert report["blobs"] == len(sizes)
    assert report["referenced"] == size_of(shared, only_a, multi, untagged)
    assert report["shared"] == size_of(shared)
    assert report["garbageCollect"] == {"blobs": 3, "bytes": size_of(garbage)}
    assert report["garbageCollectDeleteUntagged"] == {
        "blobs": 6,
        "manifests": 1,
        "bytes": size_of(garbage, untagged),
    }
    assert report["uploads"] == 1000
    text = run_cli("du", str(reg.config_path), "--bytes").stdout
    assert a in text and b in text and f"{size_of(garbage)} (3 blobs)" in text

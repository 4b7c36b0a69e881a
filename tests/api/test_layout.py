"""The storage layout on disk is registry:2's, file for file."""

from __future__ import annotations

import json

import requests

from .helpers import (
    OCI_MANIFEST,
    get_manifest,
    image_manifest,
    put_manifest,
    rand_bytes,
    repo,
    sha256,
    start_upload,
    with_query,
)


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _blob(digest: str) -> str:
    alg, hexd = digest.split(":")
    return f"blobs/{alg}/{hexd[:2]}/{hexd}/data"


def _link(repo_name: str, kind: str, digest: str) -> str:
    alg, hexd = digest.split(":")
    return f"repositories/{repo_name}/{kind}/{alg}/{hexd}/link"


def test_layout_after_pushes(make_registry):
    reg = make_registry()
    v2 = reg.root / "docker/registry/v2"
    name = "lib/app"
    m = image_manifest(reg.url, name)
    doc = json.loads(m.data)
    assert put_manifest(reg.url, name, "t1", m.data, OCI_MANIFEST).status_code == 201
    blobs = {d["digest"]: None for d in [doc["config"], *doc["layers"]]}
    files = _files(v2)
    expected = {}
    for d in blobs:
        expected[_blob(d)] = files.get(_blob(d))
        expected[_link(name, "_layers", d)] = d.encode()
    expected[_blob(m.digest)] = m.data
    expected[_link(name, "_manifests/revisions", m.digest)] = m.digest.encode()
    hexd = m.digest.split(":")[1]
    expected[f"repositories/{name}/_manifests/tags/t1/current/link"] = m.digest.encode()
    expected[f"repositories/{name}/_manifests/tags/t1/index/sha256/{hexd}/link"] = m.digest.encode()
    assert files == expected
    for d in blobs:
        assert sha256(files[_blob(d)]) == d


def test_layout_of_blob_data(make_registry):
    reg = make_registry()
    v2 = reg.root / "docker/registry/v2"
    name = repo()
    data = rand_bytes(5000)
    digest = sha256(data)
    url = start_upload(reg.url, name)
    upload_id = url.split("?")[0].rsplit("/", 1)[-1]
    assert requests.patch(url, data=data[:100]).status_code == 202
    upload = v2 / "repositories" / name / "_uploads" / upload_id
    assert (upload / "data").read_bytes() == data[:100]
    assert (upload / "startedat").read_text().strip()
    assert requests.put(with_query(url, f"digest={digest}"), data=data[100:]).status_code == 201
    assert not upload.exists()
    assert (v2 / _blob(digest)).read_bytes() == data
    assert (v2 / _link(name, "_layers", digest)).read_text() == digest


def test_retag_keeps_tag_index_history(make_registry):
    reg = make_registry()
    v2 = reg.root / "docker/registry/v2"
    name = repo()
    first = image_manifest(reg.url, name)
    second = image_manifest(reg.url, name)
    for m in (first, second):
        assert put_manifest(reg.url, name, "latest", m.data, OCI_MANIFEST).status_code == 201
    tag = v2 / "repositories" / name / "_manifests/tags/latest"
    assert (tag / "current/link").read_text() == second.digest
    index = {p.parent.name for p in (tag / "index/sha256").glob("*/link")}
    assert index == {first.digest[7:], second.digest[7:]}


def test_delete_removes_links_not_blobs(make_registry):
    reg = make_registry()
    v2 = reg.root / "docker/registry/v2"
    name = repo()
    m = image_manifest(reg.url, name)
    assert put_manifest(reg.url, name, "t", m.data, OCI_MANIFEST).status_code == 201
    assert requests.delete(f"{reg.url}/v2/{name}/manifests/{m.digest}").status_code == 202
    assert not (v2 / _link(name, "_manifests/revisions", m.digest)).exists()
    assert not (v2 / "repositories" / name / "_manifests/tags/t").exists()
    assert (v2 / _blob(m.digest)).read_bytes() == m.data  # only garbage collection removes it


def test_registry2_tree_written_by_hand_is_served(make_registry):
    """A store laid out by registry:2 (written here file by file) is readable as is."""
    reg = make_registry()
    v2 = reg.root / "docker/registry/v2"
    name = "legacy/image"
    layer = rand_bytes(777)
    config = json.dumps({"os": "linux", "architecture": "amd64"}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        },
        indent=3,
    ).encode()
    md = sha256(manifest)

    def write(rel: str, content: bytes) -> None:
        path = v2 / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    for blob in (layer, config, manifest):
        write(_blob(sha256(blob)), blob)
    for blob in (layer, config):
        write(_link(name, "_layers", sha256(blob)), sha256(blob).encode())
    write(_link(name, "_manifests/revisions", md), md.encode())
    write(f"repositories/{name}/_manifests/tags/1.0/current/link", md.encode())
    write(f"repositories/{name}/_manifests/tags/1.0/index/sha256/{md[7:]}/link", md.encode())

    r = get_manifest(reg.url, name, "1.0")
    assert r.status_code == 200
    assert r.content == manifest
    assert r.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert r.headers["Docker-Content-Digest"] == md
    assert requests.get(f"{reg.url}/v2/{name}/blobs/{sha256(layer)}").content == layer
    assert requests.get(f"{reg.url}/v2/{name}/tags/list").json() == {"name": name, "tags": ["1.0"]}
    assert requests.get(f"{reg.url}/v2/_catalog").json() == {"repositories": [name]}

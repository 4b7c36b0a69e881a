"""Manifests: every supported media type, by tag and by digest, validation, reads, deletes."""

from __future__ import annotations

import http.client
import json

import pytest
import requests

from .helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_DIGEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1_SIGNED,
    Pushed,
    absolute,
    artifact_manifest,
    assert_error,
    blob_url,
    codes,
    descriptor,
    fetch_blob,
    get_manifest,
    image_manifest,
    index_of,
    jbytes,
    push_blob,
    push_image,
    put_manifest,
    repo,
    sha256,
    sha512,
    tags_of,
)


def _assert_created(registry, r: requests.Response, name: str, m: Pushed) -> None:
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == m.digest
    assert absolute(registry.url, r.headers["Location"]) == (
        f"{registry.url}/v2/{name}/manifests/{m.digest}"
    )


def _assert_served(r: requests.Response, m: Pushed, head: bool = False) -> None:
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"] == m.media_type
    assert r.headers["Docker-Content-Digest"] == m.digest
    assert r.headers["Content-Length"] == str(len(m.data))
    assert r.headers["ETag"] == f'"{m.digest}"'
    assert r.content == (b"" if head else m.data)


def _build(registry, name: str, kind: str) -> Pushed:
    """A manifest of ``kind`` whose references are already in ``name``."""
    if kind == "docker":
        return image_manifest(registry.url, name, media_type=DOCKER_MANIFEST)
    if kind == "oci":
        return image_manifest(registry.url, name)
    if kind == "docker-list":
        children = [push_image(registry.url, name, media_type=DOCKER_MANIFEST) for _ in range(2)]
        return index_of(children, DOCKER_LIST)
    if kind == "oci-index":
        children = [push_image(registry.url, name) for _ in range(3)]
        return index_of(children, OCI_INDEX)
    if kind == "artifact":
        subject = push_image(registry.url, name)
        push_blob(registry.url, name, b"{}")
        layer = b"signature bytes"
        push_blob(registry.url, name, layer)
        return artifact_manifest(
            subject, "application/vnd.example.sig.v1", layer, {"org.example": "yes"}
        )
    raise AssertionError(kind)


KINDS = ["docker", "oci", "docker-list", "oci-index", "artifact"]


@pytest.mark.parametrize("kind", KINDS)
def test_put_and_get_by_tag(registry, kind):
    name = repo()
    m = _build(registry, name, kind)
    r = put_manifest(registry.url, name, "v1", m.data, m.media_type)
    _assert_created(registry, r, name, m)
    _assert_served(get_manifest(registry.url, name, "v1"), m)
    _assert_served(get_manifest(registry.url, name, "v1", method="HEAD"), m, head=True)
    _assert_served(get_manifest(registry.url, name, m.digest), m)
    _assert_served(get_manifest(registry.url, name, m.digest, method="HEAD"), m, head=True)
    _assert_served(get_manifest(registry.url, name, "v1", accept=m.media_type), m)
    assert "v1" in tags_of(registry.url, name)


@pytest.mark.parametrize("kind", KINDS)
def test_put_and_get_by_digest(registry, kind):
    name = repo()
    m = _build(registry, name, kind)
    r = put_manifest(registry.url, name, m.digest, m.data, m.media_type)
    _assert_created(registry, r, name, m)
    _assert_served(get_manifest(registry.url, name, m.digest), m)
    _assert_served(get_manifest(registry.url, name, m.digest, method="HEAD"), m, head=True)


def test_put_by_digest_creates_no_tag(registry):
    name = repo()
    push_image(registry.url, name)
    assert tags_of(registry.url, name) == []


def test_artifact_with_empty_config_not_pushed_is_accepted(registry):
    """The empty descriptor's ``{}`` is well known: it need not be uploaded first."""
    name = repo()
    layer = b"payload"
    push_blob(registry.url, name, layer)
    m = artifact_manifest(None, "application/vnd.example.thing", layer)
    r = put_manifest(registry.url, name, "a", m.data, m.media_type)
    _assert_created(registry, r, name, m)
    got = fetch_blob(registry.url, name, EMPTY_DIGEST)
    assert got.status_code == 200
    assert got.content == b"{}"
    assert sha256(b"{}") == EMPTY_DIGEST


def test_manifest_without_media_type_field_uses_content_type(registry):
    name = repo()
    base = image_manifest(registry.url, name)
    doc = json.loads(base.data)
    del doc["mediaType"]
    data = jbytes(doc)
    m = Pushed(data, sha256(data), OCI_MANIFEST)
    _assert_created(registry, put_manifest(registry.url, name, "t", data, OCI_MANIFEST), name, m)
    _assert_served(get_manifest(registry.url, name, "t"), m)


def test_manifest_bytes_are_kept_verbatim(registry):
    """Whitespace and key order are part of the digest: the registry must not re-serialise."""
    name = repo()
    base = image_manifest(registry.url, name)
    doc = json.loads(base.data)
    data = ("\n  " + json.dumps(doc, indent=7, sort_keys=False) + "\n\n").encode()
    m = Pushed(data, sha256(data), OCI_MANIFEST)
    _assert_created(registry, put_manifest(registry.url, name, "ws", data, OCI_MANIFEST), name, m)
    _assert_served(get_manifest(registry.url, name, "ws"), m)


def test_sha512_manifest_by_digest(registry):
    name = repo()
    m = image_manifest(registry.url, name)
    digest = sha512(m.data)
    r = put_manifest(registry.url, name, digest, m.data, m.media_type)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    g = get_manifest(registry.url, name, digest)
    assert g.status_code == 200
    assert g.content == m.data
    assert g.headers["Docker-Content-Digest"] == digest


def test_put_by_digest_with_mismatching_body(registry):
    name = repo()
    m = image_manifest(registry.url, name)
    wrong = sha256(m.data + b" ")
    r = put_manifest(registry.url, name, wrong, m.data, m.media_type)
    assert_error(r, 400, "DIGEST_INVALID")
    assert get_manifest(registry.url, name, wrong).status_code == 404
    assert get_manifest(registry.url, name, m.digest).status_code == 404


@pytest.mark.parametrize("reference", ["sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64])
def test_put_by_malformed_digest(registry, reference):
    name = repo()
    m = image_manifest(registry.url, name)
    r = put_manifest(registry.url, name, reference, m.data, m.media_type)
    assert r.status_code == 400
    assert set(codes(r)) & {"DIGEST_INVALID", "TAG_INVALID", "MANIFEST_INVALID"}


@pytest.mark.parametrize("missing", ["config", "layer"])
def test_manifest_referencing_missing_blob(registry, missing):
    name = repo()
    present = b"present layer"
    absent = b"absent blob"
    push_blob(registry.url, name, present)
    config = absent if missing == "config" else jbytes({"os": "linux"})
    layer = absent if missing == "layer" else present
    if missing == "layer":
        push_blob(registry.url, name, config)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }
    r = put_manifest(registry.url, name, "t", jbytes(doc), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert get_manifest(registry.url, name, "t").status_code == 404


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_LIST])
def test_index_referencing_missing_manifest(registry, media_type):
    name = repo()
    present = push_image(registry.url, name)
    absent = image_manifest(registry.url, name)  # blobs pushed, manifest not
    idx = index_of([present, absent], media_type)
    r = put_manifest(registry.url, name, "multi", idx.data, media_type)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert absent.digest in r.text
    assert get_manifest(registry.url, name, "multi").status_code == 404


def test_index_with_missing_children_accepted_when_platform_validation_off(make_registry):
    reg = make_registry(config={"validation": {"manifests": {"indexes": {"platforms": "none"}}}})
    name = repo()
    absent = image_manifest(reg.url, name, push_blobs=False)
    idx = index_of([absent], OCI_INDEX)
    r = put_manifest(reg.url, name, "multi", idx.data, OCI_INDEX)
    _assert_created(reg, r, name, idx)
    _assert_served(get_manifest(reg.url, name, "multi"), idx)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[]",
        b'"string"',
        b'{"schemaVersion": 2',
        b"\xff\xfe\x00",
    ],
)
def test_invalid_manifest_bodies(registry, body):
    r = put_manifest(registry.url, repo(), "t", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_manifest_without_config(registry):
    name = repo()
    doc = json.loads(image_manifest(registry.url, name).data)
    del doc["config"]
    r = put_manifest(registry.url, name, "t", jbytes(doc), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(schemaVersion=3),
        lambda d: d.pop("schemaVersion"),
        lambda d: d["config"].update(digest="sha256:xyz"),
        lambda d: d["config"].update(size=-1),
        lambda d: d["config"].update(size="12"),
        lambda d: d["config"].pop("mediaType"),
        lambda d: d.update(layers="nope"),
        lambda d: d["layers"].append("nope"),
        lambda d: d.update(annotations=["x"]),
    ],
    ids=[
        "schema3",
        "no-schema",
        "bad-digest",
        "negative-size",
        "string-size",
        "no-media-type",
        "layers-not-list",
        "layer-not-object",
        "annotations-list",
    ],
)
def test_structurally_invalid_manifests(registry, mutate):
    name = repo()
    doc = json.loads(image_manifest(registry.url, name).data)
    mutate(doc)
    r = put_manifest(registry.url, name, "t", jbytes(doc), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_layer_size_mismatch_is_rejected(registry):
    name = repo()
    doc = json.loads(image_manifest(registry.url, name).data)
    doc["layers"][0]["size"] += 1
    r = put_manifest(registry.url, name, "t", jbytes(doc), OCI_MANIFEST)
    assert r.status_code == 400
    assert set(codes(r)) & {"MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "SIZE_INVALID"}


def test_media_type_inconsistent_with_content_type(registry):
    name = repo()
    m = image_manifest(registry.url, name)  # says OCI manifest
    for content_type in (DOCKER_MANIFEST, OCI_INDEX):
        r = put_manifest(registry.url, name, "t", m.data, content_type)
        assert_error(r, 400, "MANIFEST_INVALID")
    assert get_manifest(registry.url, name, "t").status_code == 404


def test_index_body_with_image_content_type(registry):
    name = repo()
    idx = index_of([push_image(registry.url, name)], OCI_INDEX)
    r = put_manifest(registry.url, name, "t", idx.data, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_schema1_by_content_type(registry):
    name = repo()
    doc = {
        "schemaVersion": 1,
        "name": name,
        "tag": "t",
        "architecture": "amd64",
        "fsLayers": [],
        "history": [],
        "signatures": [],
    }
    r = put_manifest(registry.url, name, "t", jbytes(doc), SCHEMA1_SIGNED)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert "schema 1" in r.json()["errors"][0]["message"].lower()


def test_schema1_by_schema_version(registry):
    name = repo()
    doc = {"schemaVersion": 1, "name": name, "tag": "t", "fsLayers": [], "history": []}
    for content_type in ("application/json", None, OCI_MANIFEST):
        r = put_manifest(registry.url, name, "t", jbytes(doc), content_type)
        assert_error(r, 400, "MANIFEST_INVALID")
        assert "schema 1" in r.json()["errors"][0]["message"].lower()


def _padded_manifest(registry, name: str, total: int) -> bytes:
    base = image_manifest(registry.url, name)
    doc = json.loads(base.data)
    doc["annotations"] = {"pad": ""}
    size = len(jbytes(doc))
    doc["annotations"]["pad"] = "x" * (total - size)
    data = jbytes(doc)
    assert len(data) == total
    return data


def test_manifest_of_exactly_4_mib_is_accepted(registry):
    name = repo()
    data = _padded_manifest(registry, name, 4 * 1024 * 1024)
    r = put_manifest(registry.url, name, "big", data, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert get_manifest(registry.url, name, "big").content == data


def test_manifest_over_4_mib_is_413(registry):
    name = repo()
    data = _padded_manifest(registry, name, 4 * 1024 * 1024 + 1)
    r = put_manifest(registry.url, name, "big", data, OCI_MANIFEST)
    assert_error(r, 413)
    assert get_manifest(registry.url, name, "big").status_code == 404


def test_manifest_over_4_mib_without_content_length_is_413(registry):
    name = repo()
    data = _padded_manifest(registry, name, 4 * 1024 * 1024 + 10)

    def chunks():
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    r = requests.put(
        f"{registry.url}/v2/{name}/manifests/big",
        data=chunks(),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert_error(r, 413)
    assert get_manifest(registry.url, name, "big").status_code == 404


@pytest.mark.parametrize("tag", ["-bad", ".bad", "a" * 129, "bad@tag", "bad+tag", "b%C3%A9"])
def test_bad_tag_on_put(registry, tag):
    name = repo()
    m = image_manifest(registry.url, name)
    r = put_manifest(registry.url, name, tag, m.data, m.media_type)
    assert_error(r, 400, "TAG_INVALID")


def test_tag_of_128_characters(registry):
    name = repo()
    tag = "A_" + "b.-" * 42
    assert len(tag) == 128
    m = push_image(registry.url, name, tag)
    _assert_served(get_manifest(registry.url, name, tag), m)
    assert tags_of(registry.url, name) == [tag]


def test_accept_negotiation(registry):
    name = repo()
    m = push_image(registry.url, name, "t")
    r = get_manifest(registry.url, name, "t", accept=f"{DOCKER_MANIFEST}, {DOCKER_LIST}")
    assert_error(r, 404, "MANIFEST_UNKNOWN")
    r = get_manifest(registry.url, name, "t", accept=DOCKER_MANIFEST, method="HEAD")
    assert r.status_code == 404
    _assert_served(get_manifest(registry.url, name, "t", accept=None), m)
    _assert_served(get_manifest(registry.url, name, "t", accept="*/*"), m)
    _assert_served(
        get_manifest(registry.url, name, "t", accept=f"{DOCKER_MANIFEST};q=0.9, {OCI_MANIFEST}"),
        m,
    )


def test_docker_manifest_not_served_to_oci_only_client(registry):
    name = repo()
    m = push_image(registry.url, name, "t", media_type=DOCKER_MANIFEST)
    assert_error(
        get_manifest(registry.url, name, "t", accept=OCI_MANIFEST), 404, "MANIFEST_UNKNOWN"
    )
    _assert_served(get_manifest(registry.url, name, "t", accept=DOCKER_MANIFEST), m)


def test_index_referencing_a_blob_instead_of_a_manifest(registry):
    name = repo()
    child = image_manifest(registry.url, name)
    push_blob(registry.url, name, child.data)  # present as a blob, never PUT as a manifest
    idx = index_of([child], OCI_INDEX)
    r = put_manifest(registry.url, name, "t", idx.data, OCI_INDEX)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_accept_in_several_headers(registry):
    """Docker sends one Accept header per media type."""
    name = repo()
    m = push_image(registry.url, name, "t")
    conn = http.client.HTTPConnection(registry.host, timeout=30)
    try:
        conn.putrequest("GET", f"/v2/{name}/manifests/t")
        conn.putheader("Accept", DOCKER_MANIFEST)
        conn.putheader("Accept", OCI_MANIFEST)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == OCI_MANIFEST
    assert resp.getheader("Docker-Content-Digest") == m.digest
    assert body == m.data


def test_index_served_to_client_not_accepting_indexes(registry):
    """Like registry:2, a client that only reads image manifests gets the linux/amd64 one."""
    name = repo()
    amd64 = push_image(registry.url, name, media_type=DOCKER_MANIFEST)
    arm64 = push_image(registry.url, name, media_type=DOCKER_MANIFEST)
    idx = index_of([amd64, arm64], DOCKER_LIST)
    assert put_manifest(registry.url, name, "multi", idx.data, DOCKER_LIST).status_code == 201
    r = get_manifest(registry.url, name, "multi", accept=DOCKER_MANIFEST)
    _assert_served(r, amd64)
    _assert_served(get_manifest(registry.url, name, "multi"), idx)


def test_if_none_match(registry):
    name = repo()
    m = push_image(registry.url, name, "t")
    r = get_manifest(registry.url, name, "t", headers={"If-None-Match": f'"{m.digest}"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["Docker-Content-Digest"] == m.digest
    r = get_manifest(registry.url, name, m.digest, headers={"If-None-Match": f'"{m.digest}"'})
    assert r.status_code == 304
    other = f'"{sha256(b"other")}"'
    _assert_served(get_manifest(registry.url, name, "t", headers={"If-None-Match": other}), m)


def test_unknown_tag(registry):
    name = repo()
    push_image(registry.url, name, "exists")
    assert_error(get_manifest(registry.url, name, "nope"), 404, "MANIFEST_UNKNOWN")
    r = get_manifest(registry.url, name, "nope", method="HEAD")
    assert r.status_code == 404
    assert r.content == b""


def test_unknown_digest(registry):
    name = repo()
    push_image(registry.url, name, "exists")
    r = get_manifest(registry.url, name, sha256(b"unknown"))
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_blob_digest_is_not_a_manifest(registry):
    name = repo()
    digest = push_blob(registry.url, name, jbytes({"schemaVersion": 2, "layers": []}))
    assert_error(get_manifest(registry.url, name, digest), 404, "MANIFEST_UNKNOWN")


def test_manifest_of_another_repository_is_unknown(registry):
    a, b = repo(), repo()
    m = push_image(registry.url, a, "t")
    push_image(registry.url, b, "other")
    assert_error(get_manifest(registry.url, b, m.digest), 404, "MANIFEST_UNKNOWN")


def test_unknown_repository(registry):
    assert_error(get_manifest(registry.url, repo(), "latest"), 404, "NAME_UNKNOWN")
    r = get_manifest(registry.url, repo(), sha256(b"x"))
    assert_error(r, 404)
    assert set(codes(r)) & {"NAME_UNKNOWN", "MANIFEST_UNKNOWN"}


@pytest.mark.parametrize(
    "reference",
    [
        "sha256:garbage",
        "sha256:",
        "sha256:" + "0" * 63,
        "sha256:" + "A" * 64,
        "md5:" + "0" * 32,
        "sha512:" + "0" * 64,
        "foo:bar",
    ],
)
def test_get_by_malformed_digest_is_never_500(registry, reference):
    name = repo()
    push_image(registry.url, name, "t")
    for method in ("GET", "HEAD"):
        r = get_manifest(registry.url, name, reference, method=method)
        assert r.status_code in (400, 404), (method, r.status_code)
        if method == "GET":
            assert_error(r, r.status_code)
    r = requests.delete(f"{registry.url}/v2/{name}/manifests/{reference}")
    assert r.status_code in (400, 404)
    assert_error(r, r.status_code)


def test_bad_tag_on_get(registry):
    name = repo()
    push_image(registry.url, name, "t")
    r = get_manifest(registry.url, name, "-bad")
    assert r.status_code in (400, 404)
    assert_error(r, r.status_code)


def test_delete_by_digest(registry):
    name = repo()
    m = push_image(registry.url, name, "a")
    assert put_manifest(registry.url, name, "b", m.data, m.media_type).status_code == 201
    keep = push_image(registry.url, name, "keep")
    r = requests.delete(f"{registry.url}/v2/{name}/manifests/{m.digest}")
    assert r.status_code == 202
    assert_error(get_manifest(registry.url, name, m.digest), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(registry.url, name, "a"), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(registry.url, name, "b"), 404, "MANIFEST_UNKNOWN")
    assert tags_of(registry.url, name) == ["keep"]
    _assert_served(get_manifest(registry.url, name, "keep"), keep)
    r = requests.delete(f"{registry.url}/v2/{name}/manifests/{m.digest}")
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_delete_by_digest_then_push_again(registry):
    name = repo()
    m = push_image(registry.url, name, "a")
    assert requests.delete(f"{registry.url}/v2/{name}/manifests/{m.digest}").status_code == 202
    assert put_manifest(registry.url, name, "a", m.data, m.media_type).status_code == 201
    _assert_served(get_manifest(registry.url, name, "a"), m)


def test_delete_by_tag_untags_only(registry):
    name = repo()
    m = push_image(registry.url, name, "a")
    assert put_manifest(registry.url, name, "b", m.data, m.media_type).status_code == 201
    r = requests.delete(f"{registry.url}/v2/{name}/manifests/a")
    assert r.status_code == 202
    assert_error(get_manifest(registry.url, name, "a"), 404, "MANIFEST_UNKNOWN")
    _assert_served(get_manifest(registry.url, name, m.digest), m)
    _assert_served(get_manifest(registry.url, name, "b"), m)
    assert tags_of(registry.url, name) == ["b"]
    assert_error(requests.delete(f"{registry.url}/v2/{name}/manifests/a"), 404, "MANIFEST_UNKNOWN")


def test_delete_unknown_manifest(registry):
    name = repo()
    push_image(registry.url, name, "t")
    r = requests.delete(f"{registry.url}/v2/{name}/manifests/{sha256(b'x')}")
    assert_error(r, 404, "MANIFEST_UNKNOWN")
    r = requests.delete(f"{registry.url}/v2/{name}/manifests/nope")
    assert_error(r, 404, "MANIFEST_UNKNOWN")
    r = requests.delete(f"{registry.url}/v2/{repo()}/manifests/nope")
    assert_error(r, 404)


def test_retag_moves_the_tag(registry):
    name = repo()
    first = push_image(registry.url, name, "latest")
    second = push_image(registry.url, name, "latest")
    assert first.digest != second.digest
    _assert_served(get_manifest(registry.url, name, "latest"), second)
    _assert_served(get_manifest(registry.url, name, first.digest), first)
    assert (
        put_manifest(registry.url, name, "latest", first.data, first.media_type).status_code == 201
    )
    _assert_served(get_manifest(registry.url, name, "latest"), first)
    assert tags_of(registry.url, name) == ["latest"]


def test_put_same_manifest_twice_is_idempotent(registry):
    name = repo()
    m = image_manifest(registry.url, name)
    for _ in range(2):
        r = put_manifest(registry.url, name, "t", m.data, m.media_type)
        _assert_created(registry, r, name, m)
    _assert_served(get_manifest(registry.url, name, "t"), m)


def test_manifest_put_content_type_with_parameters(registry):
    name = repo()
    m = image_manifest(registry.url, name)
    r = put_manifest(registry.url, name, "t", m.data, f"{OCI_MANIFEST}; charset=utf-8")
    _assert_created(registry, r, name, m)
    assert get_manifest(registry.url, name, "t").headers["Content-Type"] == OCI_MANIFEST


def test_blob_referenced_by_manifest_is_readable(registry):
    name = repo()
    m = push_image(registry.url, name, "t")
    doc = json.loads(m.data)
    for d in [doc["config"], *doc["layers"]]:
        h = requests.head(blob_url(registry.url, name, d["digest"]))
        assert h.status_code == 200
        assert h.headers["Content-Length"] == str(d["size"])

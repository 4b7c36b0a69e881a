"""``validation`` config: index platform requirements, layer URL policies, ``disabled``."""

from __future__ import annotations

from .helpers import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Pushed,
    assert_error,
    codes,
    descriptor,
    get_manifest,
    image_manifest,
    jbytes,
    push_blob,
    push_image,
    put_manifest,
    repo,
    sha256,
)

NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def _index(children: list[tuple[Pushed, str]]) -> Pushed:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(c.media_type, c.data, platform={"os": "linux", "architecture": arch})
            for c, arch in children
        ],
    }
    data = jbytes(doc)
    return Pushed(data, sha256(data), OCI_INDEX)


def test_index_platform_list(make_registry):
    reg = make_registry(
        config={
            "validation": {
                "manifests": {
                    "indexes": {
                        "platforms": "list",
                        "platformlist": [{"architecture": "amd64", "os": "linux"}],
                    }
                }
            }
        }
    )
    name = repo()
    present = push_image(reg.url, name)
    absent = image_manifest(reg.url, name, push_blobs=False)
    ok = _index([(present, "amd64"), (absent, "arm64")])
    r = put_manifest(reg.url, name, "ok", ok.data, OCI_INDEX)
    assert r.status_code == 201, r.text
    assert get_manifest(reg.url, name, "ok").content == ok.data
    bad = _index([(absent, "amd64"), (present, "arm64")])
    r = put_manifest(reg.url, name, "bad", bad.data, OCI_INDEX)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert absent.digest in r.text


def test_index_platforms_all_is_the_default(registry):
    name = repo()
    present = push_image(registry.url, name)
    absent = image_manifest(registry.url, name, push_blobs=False)
    idx = _index([(present, "amd64"), (absent, "riscv64")])
    assert_error(put_manifest(registry.url, name, "t", idx.data, OCI_INDEX), 400)


def _url_manifest(base: str, name: str, url: str) -> bytes:
    config = b'{"os":"windows"}'
    push_blob(base, name, config)
    return jbytes(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [
                {
                    "mediaType": NONDIST,
                    "digest": sha256(url.encode()),
                    "size": 1234,
                    "urls": [url],
                }
            ],
        }
    )


def test_layer_url_allow_and_deny(make_registry):
    reg = make_registry(
        config={
            "validation": {
                "manifests": {
                    "urls": {
                        "allow": [r"^https://layers\.example/"],
                        "deny": [r"^https://layers\.example/private/"],
                    }
                }
            }
        }
    )
    name = repo()
    # an allowed URL: the layer itself is not in the registry, and need not be
    data = _url_manifest(reg.url, name, "https://layers.example/base.tar.gz")
    r = put_manifest(reg.url, name, "ok", data, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert get_manifest(reg.url, name, "ok").content == data
    for url in (
        "https://elsewhere.example/base.tar.gz",
        "https://layers.example/private/secret.tar.gz",
    ):
        data = _url_manifest(reg.url, name, url)
        r = put_manifest(reg.url, name, "bad", data, OCI_MANIFEST)
        assert r.status_code == 400, (url, r.status_code)
        assert set(codes(r)) & {"MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN"}
    assert get_manifest(reg.url, name, "bad").status_code == 404


def test_validation_disabled_allows_any_layer_url(make_registry):
    """registry:2: ``validation.disabled`` lifts the URL policy (Windows foreign layers)."""
    reg = make_registry(config={"validation": {"disabled": True}})
    name = repo()
    data = _url_manifest(reg.url, name, "https://anywhere.example/layer.tar.gz")
    r = put_manifest(reg.url, name, "t", data, OCI_MANIFEST)
    assert r.status_code == 201, r.text


def test_validation_disabled_still_requires_blobs(make_registry):
    reg = make_registry(config={"validation": {"disabled": True}})
    name = repo()
    m = image_manifest(reg.url, name, push_blobs=False)
    r = put_manifest(reg.url, name, "t", m.data, m.media_type)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")

"""OCI 1.1 ``subject`` and the referrers API."""

from __future__ import annotations

import json

import pytest
import requests

from .helpers import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Pushed,
    artifact_manifest,
    assert_error,
    get_manifest,
    image_manifest,
    index_of,
    jbytes,
    push_blob,
    push_image,
    put_manifest,
    repo,
    sha256,
)

SIG = "application/vnd.example.signature.v1+json"
SBOM = "application/vnd.example.sbom.v1+json"


def _referrers(registry, name: str, digest: str, artifact_type: str | None = None):
    params = {"artifactType": artifact_type} if artifact_type else None
    return requests.get(f"{registry.url}/v2/{name}/referrers/{digest}", params=params)


def _push_artifact(
    registry,
    name: str,
    subject: Pushed | None,
    artifact_type: str,
    annotations: dict[str, str] | None = None,
    tag: str | None = None,
) -> Pushed:
    layer = f"{artifact_type} {json.dumps(annotations)} {tag}".encode()
    push_blob(registry.url, name, layer)
    m = artifact_manifest(subject, artifact_type, layer, annotations)
    r = put_manifest(registry.url, name, tag or m.digest, m.data, m.media_type)
    assert r.status_code == 201, r.text
    if subject is not None:
        assert r.headers["OCI-Subject"] == subject.digest
    return m


def _index(r: requests.Response) -> dict:
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == OCI_INDEX
    body = r.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert isinstance(body["manifests"], list)
    return body


def test_put_with_subject_answers_oci_subject(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    layer = b"sig"
    push_blob(registry.url, name, layer)
    m = artifact_manifest(subject, SIG, layer)
    r = put_manifest(registry.url, name, m.digest, m.data, m.media_type)
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == subject.digest
    assert r.headers["Docker-Content-Digest"] == m.digest


def test_put_without_subject_has_no_oci_subject(registry):
    name = repo()
    m = image_manifest(registry.url, name)
    r = put_manifest(registry.url, name, "t", m.data, m.media_type)
    assert r.status_code == 201
    assert "OCI-Subject" not in r.headers


def test_referrers_lists_descriptors(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    sig = _push_artifact(registry, name, subject, SIG, {"org.example.signer": "alice"})
    sbom = _push_artifact(registry, name, subject, SBOM, {"org.example.format": "spdx"}, "sbom")
    body = _index(_referrers(registry, name, subject.digest))
    by_digest = {d["digest"]: d for d in body["manifests"]}
    assert set(by_digest) == {sig.digest, sbom.digest}
    assert by_digest[sig.digest] == {
        "mediaType": OCI_MANIFEST,
        "digest": sig.digest,
        "size": len(sig.data),
        "artifactType": SIG,
        "annotations": {"org.example.signer": "alice"},
    }
    assert by_digest[sbom.digest]["artifactType"] == SBOM
    assert by_digest[sbom.digest]["size"] == len(sbom.data)
    assert by_digest[sbom.digest]["annotations"] == {"org.example.format": "spdx"}
    assert "OCI-Filters-Applied" not in _referrers(registry, name, subject.digest).headers


def test_referrers_empty_when_none(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    assert _index(_referrers(registry, name, subject.digest))["manifests"] == []
    assert _index(_referrers(registry, name, sha256(b"never pushed")))["manifests"] == []


def test_referrers_of_unknown_repository_is_empty_not_404(registry):
    assert _index(_referrers(registry, repo(), sha256(b"x")))["manifests"] == []


def test_referrers_artifact_type_filter(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    sig = _push_artifact(registry, name, subject, SIG)
    _push_artifact(registry, name, subject, SBOM)
    r = _referrers(registry, name, subject.digest, SIG)
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in _index(r)["manifests"]] == [sig.digest]
    r = _referrers(registry, name, subject.digest, "application/vnd.none")
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert _index(r)["manifests"] == []


def test_referrer_image_without_artifact_type_uses_config_media_type(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    config = b'{"custom": true}'
    push_blob(registry.url, name, config)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.example.config.v1+json",
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(subject.data)},
    }
    data = jbytes(doc)
    r = put_manifest(registry.url, name, sha256(data), data, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject.digest
    (d,) = _index(_referrers(registry, name, subject.digest))["manifests"]
    assert d["digest"] == sha256(data)
    assert d["artifactType"] == "application/vnd.example.config.v1+json"


def test_index_as_referrer(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    child = push_image(registry.url, name)
    idx = index_of(
        [child],
        OCI_INDEX,
        artifactType=SBOM,
        subject={"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(subject.data)},
    )
    r = put_manifest(registry.url, name, idx.digest, idx.data, OCI_INDEX)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject.digest
    (d,) = _index(_referrers(registry, name, subject.digest))["manifests"]
    assert d["mediaType"] == OCI_INDEX
    assert d["digest"] == idx.digest
    assert d["artifactType"] == SBOM


def test_referrer_to_a_missing_subject_is_accepted_and_listed(registry):
    """The spec lets a referrer arrive before its subject."""
    name = repo()
    ghost = image_manifest(registry.url, name)  # never pushed as a manifest
    art = _push_artifact(registry, name, ghost, SIG)
    (d,) = _index(_referrers(registry, name, ghost.digest))["manifests"]
    assert d["digest"] == art.digest


def test_referrers_of_an_index_subject(registry):
    name = repo()
    idx = index_of([push_image(registry.url, name)], OCI_INDEX)
    assert put_manifest(registry.url, name, "multi", idx.data, OCI_INDEX).status_code == 201
    art = _push_artifact(registry, name, idx, SIG)
    (d,) = _index(_referrers(registry, name, idx.digest))["manifests"]
    assert d["digest"] == art.digest


def test_deleted_referrer_disappears(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    sig = _push_artifact(registry, name, subject, SIG)
    sbom = _push_artifact(registry, name, subject, SBOM)
    r = requests.delete(f"{registry.url}/v2/{name}/manifests/{sig.digest}")
    assert r.status_code == 202
    listed = [d["digest"] for d in _index(_referrers(registry, name, subject.digest))["manifests"]]
    assert listed == [sbom.digest]


def test_untagging_a_referrer_keeps_it_listed(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    sig = _push_artifact(registry, name, subject, SIG, tag="sig")
    assert requests.delete(f"{registry.url}/v2/{name}/manifests/sig").status_code == 202
    listed = [d["digest"] for d in _index(_referrers(registry, name, subject.digest))["manifests"]]
    assert listed == [sig.digest]


def test_deleting_the_subject_keeps_referrers_readable(registry):
    name = repo()
    subject = push_image(registry.url, name, "v1")
    sig = _push_artifact(registry, name, subject, SIG)
    assert (
        requests.delete(f"{registry.url}/v2/{name}/manifests/{subject.digest}").status_code == 202
    )
    r = get_manifest(registry.url, name, sig.digest)
    assert r.status_code == 200
    assert r.content == sig.data


def test_referrers_are_per_repository(registry):
    a, b = repo(), repo()
    subject = push_image(registry.url, a, "v1")
    push_image(registry.url, b, "v1")
    _push_artifact(registry, a, subject, SIG)
    assert _index(_referrers(registry, b, subject.digest))["manifests"] == []


def test_docker_manifest_with_subject(registry):
    """A subject on a Docker schema 2 manifest is still recorded (clients do send these)."""
    name = repo()
    subject = push_image(registry.url, name, "v1")
    m = image_manifest(
        registry.url,
        name,
        media_type=DOCKER_MANIFEST,
        extra={
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": subject.digest,
                "size": len(subject.data),
            }
        },
    )
    r = put_manifest(registry.url, name, m.digest, m.data, m.media_type)
    assert r.status_code == 201, r.text
    listed = _index(_referrers(registry, name, subject.digest))["manifests"]
    assert [d["digest"] for d in listed] == [m.digest]


@pytest.mark.parametrize(
    "digest", ["sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64, "latest", "sha256:"]
)
def test_referrers_invalid_digest(registry, digest):
    r = requests.get(f"{registry.url}/v2/{repo()}/referrers/{digest}")
    assert_error(r, 400, "DIGEST_INVALID")


def test_invalid_subject_descriptor(registry):
    name = repo()
    layer = b"x"
    push_blob(registry.url, name, layer)
    m = artifact_manifest(None, SIG, layer)
    doc = json.loads(m.data)
    doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": "sha256:nothex", "size": 1}
    r = put_manifest(registry.url, name, "t", jbytes(doc), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")

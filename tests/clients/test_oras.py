"""The oras Python SDK: artifacts (non-image content) and the OCI 1.1 referrers API."""

from __future__ import annotations

import os
import random
from pathlib import Path

import oras.client
import oras.oci
import pytest
import requests
from support.images import OCI_INDEX, OCI_MANIFEST, get_manifest, sha256_digest
from support.servers import RegistryProcess, unique_repo

pytestmark = pytest.mark.clients

SIGNATURE_TYPE = "application/vnd.cargohold.test.signature.v1+json"


def _client(server: RegistryProcess) -> oras.client.OrasClient:
    return oras.client.OrasClient(hostname=server.host, insecure=True)


def _artifact(tmp_path: Path, name: str, size: int, seed: int) -> Path:
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _push(
    server: RegistryProcess, target: str, files: list[Path], **kwargs: object
) -> requests.Response:
    resp: requests.Response = _client(server).push(
        target=target,
        files=[str(f) for f in files],
        disable_path_validation=True,
        quiet=True,
        **kwargs,
    )
    assert resp.status_code == 201, f"{resp.status_code} {resp.text}\n{server.describe_log()}"
    return resp


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_oras_push_pull_artifact(server: RegistryProcess, tmp_path: Path, chunked: bool) -> None:
    artifact = _artifact(tmp_path, "payload.bin", 300_000, seed=41)
    repo = unique_repo("oras/artifact")
    target = f"{server.host}/{repo}:v1"

    resp = _push(server, target, [artifact], do_chunked=chunked, chunk_size=64 * 1024)
    digest = resp.headers.get("Docker-Content-Digest")
    assert digest and digest.startswith("sha256:")

    manifest_resp = get_manifest(server.url, repo, "v1")
    assert manifest_resp.status_code == 200
    assert sha256_digest(manifest_resp.content) == digest
    layer = manifest_resp.json()["layers"][0]
    assert layer["digest"] == sha256_digest(artifact.read_bytes())
    assert layer["annotations"]["org.opencontainers.image.title"] == "payload.bin"

    outdir = tmp_path / "pulled"
    pulled = _client(server).pull(target=target, outdir=str(outdir))
    assert [os.path.basename(p) for p in pulled] == ["payload.bin"]
    assert Path(pulled[0]).read_bytes() == artifact.read_bytes()


def test_oras_referrers(registry: RegistryProcess, tmp_path: Path) -> None:
    """An artifact with ``subject`` shows up in ``GET /v2/<repo>/referrers/<digest>``.

    cargohold only: the reference registry (distribution 2.8) has no referrers API.
    """
    repo = unique_repo("oras/referrers")
    subject_file = _artifact(tmp_path, "sbom-subject.bin", 2048, seed=42)
    subject_resp = _push(registry, f"{registry.host}/{repo}:subject", [subject_file])
    subject_digest = subject_resp.headers["Docker-Content-Digest"]
    head = get_manifest(registry.url, repo, subject_digest, method="HEAD")
    assert head.status_code == 200
    subject = oras.oci.Subject(
        mediaType=OCI_MANIFEST, digest=subject_digest, size=int(head.headers["Content-Length"])
    )

    # nothing refers to it yet: an empty index, not a 404
    empty = requests.get(f"{registry.url}/v2/{repo}/referrers/{subject_digest}", timeout=30)
    assert empty.status_code == 200, empty.text
    assert empty.json()["manifests"] == []

    signature = _artifact(tmp_path, "signature.bin", 512, seed=43)
    config = tmp_path / "config.json"
    config.write_text("{}")
    referrer_resp = _push(
        registry,
        f"{registry.host}/{repo}:signature",
        [signature],
        subject=subject,
        manifest_config=f"{config}:{SIGNATURE_TYPE}",
        manifest_annotations={"org.cargohold.test.kind": "signature"},
    )
    referrer_digest = referrer_resp.headers["Docker-Content-Digest"]
    assert referrer_resp.headers.get("OCI-Subject") == subject_digest

    listing = requests.get(f"{registry.url}/v2/{repo}/referrers/{subject_digest}", timeout=30)
    assert listing.status_code == 200, listing.text
    assert listing.headers["Content-Type"].split(";")[0] == OCI_INDEX
    index = listing.json()
    assert index["mediaType"] == OCI_INDEX
    assert len(index["manifests"]) == 1
    desc = index["manifests"][0]
    referrer_body = get_manifest(registry.url, repo, referrer_digest).content
    assert desc["digest"] == referrer_digest
    assert desc["size"] == len(referrer_body)
    assert desc["mediaType"] == OCI_MANIFEST
    assert desc["artifactType"] == SIGNATURE_TYPE  # from config.mediaType (no artifactType)
    assert desc["annotations"]["org.cargohold.test.kind"] == "signature"

    filtered = requests.get(
        f"{registry.url}/v2/{repo}/referrers/{subject_digest}",
        params={"artifactType": SIGNATURE_TYPE},
        timeout=30,
    )
    assert filtered.status_code == 200
    assert [d["digest"] for d in filtered.json()["manifests"]] == [referrer_digest]
    assert filtered.headers.get("OCI-Filters-Applied") == "artifactType"
    other = requests.get(
        f"{registry.url}/v2/{repo}/referrers/{subject_digest}",
        params={"artifactType": "application/vnd.example.other"},
        timeout=30,
    )
    assert other.status_code == 200
    assert other.json()["manifests"] == []

    # the referrer itself pulls back like any artifact
    pulled = _client(registry).pull(
        target=f"{registry.host}/{repo}@{referrer_digest}", outdir=str(tmp_path / "out")
    )
    assert Path(pulled[0]).read_bytes() == signature.read_bytes()

"""Small HTTP helpers for the API tests: real requests over loopback, no mocks."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
ALL_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
TIMEOUT = 60


def repo(prefix: str = "api") -> str:
    """A repository name nobody else uses on the shared registry."""
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def rand_bytes(size: int, seed: int | None = None) -> bytes:
    if seed is None:
        return os.urandom(size)
    return random.Random(seed).randbytes(size)


def jbytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def absolute(base: str, location: str) -> str:
    return urljoin(base + "/", location)


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def codes(resp: requests.Response) -> list[str]:
    """Error codes of a registry error body (asserts it is the spec's JSON form)."""
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list), body
    assert body["errors"], body
    for err in body["errors"]:
        assert isinstance(err.get("code"), str) and isinstance(err.get("message"), str), err
    return [e["code"] for e in body["errors"]]


def assert_error(resp: requests.Response, status: int, code: str | None = None) -> None:
    """``status`` with a JSON error body whose code is ``code`` (any code when None)."""
    assert resp.status_code == status, (resp.status_code, resp.headers, resp.text[:500])
    if resp.request.method == "HEAD":
        assert resp.content == b""
        return
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    found = codes(resp)
    if code is not None:
        assert code in found, (code, resp.text[:500])


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    host: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Raw:
    """Send ``path`` byte for byte (no client-side normalisation of ``..`` or ``%2e``)."""
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Raw(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def assert_raw_error(r: Raw, statuses: tuple[int, ...], allowed: set[str] | None = None) -> None:
    assert r.status in statuses, (r.status, r.body[:300])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    found = [e["code"] for e in body["errors"]]
    if allowed is not None:
        assert set(found) & allowed, found


# ----------------------------------------------------------------------------- blobs


def start_upload(base: str, name: str, session: requests.Session | None = None) -> str:
    """POST an upload session; returns the absolute upload URL."""
    http = session or requests
    r = http.post(f"{base}/v2/{name}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202, (r.status_code, r.text)
    return absolute(base, r.headers["Location"])


def push_blob(base: str, name: str, data: bytes, session: requests.Session | None = None) -> str:
    """POST then PUT ?digest= with the whole body (containerd style); returns the digest."""
    http = session or requests
    digest = sha256(data)
    url = start_upload(base, name, session)
    r = http.put(
        with_query(url, f"digest={digest}"),
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == digest
    return digest


def blob_url(base: str, name: str, digest: str) -> str:
    return f"{base}/v2/{name}/blobs/{digest}"


def fetch_blob(base: str, name: str, digest: str) -> requests.Response:
    return requests.get(blob_url(base, name, digest), timeout=TIMEOUT)


# ----------------------------------------------------------------------------- manifests


def put_manifest(
    base: str,
    name: str,
    reference: str,
    data: bytes,
    media_type: str | None = OCI_MANIFEST,
    session: requests.Session | None = None,
) -> requests.Response:
    http = session or requests
    headers = {"Content-Type": media_type} if media_type else {}
    return http.put(
        f"{base}/v2/{name}/manifests/{reference}", data=data, headers=headers, timeout=TIMEOUT
    )


def get_manifest(
    base: str,
    name: str,
    reference: str,
    accept: str | None = ALL_MANIFESTS,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    h = dict(headers or {})
    if accept is not None:
        h["Accept"] = accept
    return requests.request(
        method, f"{base}/v2/{name}/manifests/{reference}", headers=h, timeout=TIMEOUT
    )


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


@dataclass
class Pushed:
    """A manifest as pushed: its bytes, digest and media type."""

    data: bytes
    digest: str
    media_type: str


def image_manifest(
    base: str,
    name: str,
    *,
    media_type: str = OCI_MANIFEST,
    layers: int = 1,
    seed: int | None = None,
    push_blobs: bool = True,
    extra: dict[str, Any] | None = None,
) -> Pushed:
    """Build an image manifest (pushing its config and layers to ``name``); not the manifest."""
    rng = random.Random(seed if seed is not None else uuid.uuid4().int)
    docker = media_type == DOCKER_MANIFEST
    config = jbytes(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": rng.getrandbits(64),
        }
    )
    layer_blobs = [rng.randbytes(64 + i) for i in range(layers)]
    if push_blobs:
        for blob in (config, *layer_blobs):
            push_blob(base, name, blob)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, b) for b in layer_blobs],
    }
    doc.update(extra or {})
    data = jbytes(doc)
    return Pushed(data, sha256(data), media_type)


def push_image(
    base: str,
    name: str,
    reference: str | None = None,
    *,
    media_type: str = OCI_MANIFEST,
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Pushed:
    """Push config, layer and an image manifest; by ``reference`` (tag) or by its digest."""
    m = image_manifest(base, name, media_type=media_type, seed=seed, extra=extra)
    r = put_manifest(base, name, reference or m.digest, m.data, media_type)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == m.digest
    return m


def index_of(children: list[Pushed], media_type: str = OCI_INDEX, **extra: Any) -> Pushed:
    platforms = [("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x"), ("linux", "ppc64le")]
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            descriptor(
                c.media_type,
                c.data,
                platform={"os": platforms[i % 4][0], "architecture": platforms[i % 4][1]},
            )
            for i, c in enumerate(children)
        ],
        **extra,
    }
    data = jbytes(doc)
    return Pushed(data, sha256(data), media_type)


def artifact_manifest(
    subject: Pushed | None,
    artifact_type: str,
    layer: bytes,
    annotations: dict[str, str] | None = None,
) -> Pushed:
    """An OCI 1.1 artifact: ``artifactType``, the empty config, one layer, maybe a subject."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [descriptor("application/octet-stream", layer)],
    }
    if subject is not None:
        doc["subject"] = descriptor(subject.media_type, subject.data)
    if annotations:
        doc["annotations"] = annotations
    data = jbytes(doc)
    return Pushed(data, sha256(data), OCI_MANIFEST)


def tags_of(base: str, name: str) -> list[str]:
    r = requests.get(f"{base}/v2/{name}/tags/list", timeout=TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text)
    tags: list[str] = r.json()["tags"] or []
    return tags


# ----------------------------------------------------------------------------- filesystem


def tree(root: Path) -> set[str]:
    """Every path (files and directories) below ``root``, relative, as strings."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}

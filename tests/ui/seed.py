"""Images for the web UI's tests: a few repositories, a multi-platform index and referrers.

Everything is pushed over the registry's own API (``support.images``), so the UI reads what a
real push wrote. ``seed`` returns what was pushed, for the assertions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests
from support.images import (
    OCI_MANIFEST,
    ImageCache,
    canonical_json,
    push_blob,
    push_image,
    push_manifest,
    sha256_digest,
)

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
SBOM_TYPE = "application/spdx+json"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"


@dataclass
class Seeded:
    digests: dict[str, str] = field(default_factory=dict)  # "repo:tag" -> manifest digest
    index: str = ""  # the multi-platform index's digest ("team/api:2.0")
    platforms: dict[str, str] = field(default_factory=dict)  # "linux/arm64" -> digest
    sbom: str = ""  # the SBOM referrer of team/app:1.0
    signature: str = ""


def push_referrer(
    base_url: str,
    repo: str,
    subject_digest: str,
    subject_size: int,
    artifact_type: str,
    payload: bytes,
    session: requests.Session,
) -> str:
    """An OCI 1.1 artifact manifest with ``subject``, pushed by digest."""
    push_blob(base_url, repo, b"{}", session=session)
    push_blob(base_url, repo, payload, session=session)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_CONFIG, "digest": sha256_digest(b"{}"), "size": 2},
            "layers": [
                {
                    "mediaType": artifact_type,
                    "digest": sha256_digest(payload),
                    "size": len(payload),
                }
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
            "annotations": {"org.opencontainers.image.created": "2024-05-01T10:00:00Z"},
        }
    )
    digest = sha256_digest(manifest)
    push_manifest(base_url, repo, digest, manifest, OCI_MANIFEST, session=session)
    return digest


def seed(base_url: str, images: ImageCache, session: requests.Session | None = None) -> Seeded:
    http = session or requests.Session()
    out = Seeded()
    app = images.get(seed=31, layer_count=2)
    for tag in ("1.0", "1.1", "latest"):
        out.digests[f"team/app:{tag}"] = push_image(base_url, "team/app", app, tag, session=http)
    other = images.get(seed=32)
    out.digests["team/app:old"] = push_image(base_url, "team/app", other, "old", session=http)
    multi = images.get(seed=33, multi_arch=True)
    out.index = push_image(base_url, "team/api", multi, "2.0", session=http)
    out.digests["team/api:2.0"] = out.index
    for p in multi.platforms:
        out.platforms[f"{p.os}/{p.architecture}"] = p.manifest.digest
    tools = images.get(seed=34)
    out.digests["public/tools:stable"] = push_image(
        base_url, "public/tools", tools, "stable", session=http
    )
    secret = images.get(seed=35)
    out.digests["private/vault:1"] = push_image(
        base_url, "private/vault", secret, "1", session=http
    )
    subject = app.platforms[0].manifest
    out.sbom = push_referrer(
        base_url,
        "team/app",
        subject.digest,
        subject.size,
        SBOM_TYPE,
        b'{"spdxVersion": "SPDX-2.3", "name": "team/app"}',
        http,
    )
    out.signature = push_referrer(
        base_url,
        "team/app",
        subject.digest,
        subject.size,
        SIGNATURE_TYPE,
        b'{"critical": {"identity": {"docker-reference": "team/app"}}}',
        http,
    )
    return out

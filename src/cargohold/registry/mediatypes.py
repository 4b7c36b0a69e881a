"""Manifest media types the registry understands, and what each one may reference."""

from __future__ import annotations

from typing import Final

DOCKER_MANIFEST_V2: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"

IMAGE_MANIFESTS: Final = frozenset({DOCKER_MANIFEST_V2, OCI_MANIFEST})
INDEXES: Final = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
SUPPORTED: Final = IMAGE_MANIFESTS | INDEXES
SCHEMA1: Final = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, "application/json"})

"""Media types: the manifests the registry understands (and what each may reference), and the
configs and layers that importing and exporting images reads and writes."""

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

DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"

REF_NAME: Final = "org.opencontainers.image.ref.name"
CONTAINERD_NAME: Final = "io.containerd.image.name"

#: What a client accepts when it fetches a manifest for export.
MANIFEST_ACCEPT: Final = ", ".join(
    [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2]
)


def is_gzip_layer(media_type: str) -> bool:
    return media_type.endswith(("+gzip", ".gzip"))


def is_zstd_layer(media_type: str) -> bool:
    return media_type.endswith(("+zstd", ".zstd"))

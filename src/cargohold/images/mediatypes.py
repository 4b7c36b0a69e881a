"""Media types of configs and layers (the registry's own module covers manifests)."""

from __future__ import annotations

from typing import Final

from cargohold.registry.mediatypes import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    IMAGE_MANIFESTS,
    INDEXES,
    OCI_INDEX,
    OCI_MANIFEST,
)

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V2",
    "IMAGE_MANIFESTS",
    "INDEXES",
    "MANIFESTS",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
]

DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
MANIFESTS: Final = IMAGE_MANIFESTS | INDEXES

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

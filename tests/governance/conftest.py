"""Fixtures of the governance tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.clients import DockerDaemon, Skopeo
from support.images import TestImage

DockerLoad = Callable[[TestImage, str], str]


@pytest.fixture
def docker_load(dockerd: DockerDaemon, skopeo: Skopeo, tmp_path: Path) -> Iterator[DockerLoad]:
    """``docker_load(image, name) -> "governance/NAME:1"``: the test image loaded into the
    private dockerd (through a docker-archive made by skopeo); removed at teardown."""
    loaded: list[str] = []

    def load(image: TestImage, name: str) -> str:
        local = f"governance/{name}:1"
        archive = tmp_path / f"{name}.tar"
        skopeo.copy(image.oci_ref(), f"docker-archive:{archive}:{local}")
        dockerd.docker("load", "-i", str(archive))
        loaded.append(local)
        return local

    yield load
    for local in loaded:
        dockerd.docker("rmi", "--force", local, check=False)

"""podman (private vfs storage) pulling from and pushing to the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.clients import Podman, Skopeo
from support.images import ImageCache, get_manifest
from support.servers import RegistryProcess, unique_repo

pytestmark = pytest.mark.clients


def test_podman_pull_push_pull(
    podman: Podman, sk: Skopeo, server: RegistryProcess, images: ImageCache, tmp_path: Path
) -> None:
    image = images.get(seed=61)
    source = f"{server.host}/{unique_repo('podman/src')}:v1"
    sk.copy(image.oci_ref(), f"docker://{source}")

    podman.podman("pull", "--tls-verify=false", source, logs=[server])
    info = podman.inspect(source)
    assert info["Digest"] == image.digest
    assert "sha256:" + info["Id"] == image.config_digest

    dest_repo = unique_repo("podman/dest")
    dest = f"{server.host}/{dest_repo}:pushed"
    digest_file = tmp_path / "digest"
    podman.podman(
        "push", "--tls-verify=false", "--digestfile", str(digest_file), source, f"docker://{dest}",
        logs=[server],
    )  # fmt: skip
    pushed = digest_file.read_text().strip()
    resp = get_manifest(server.url, dest_repo, "pushed")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Docker-Content-Digest"] == pushed
    assert resp.json()["config"]["digest"] == image.config_digest

    podman.podman("rmi", "--force", source)
    podman.podman("pull", "--tls-verify=false", dest, logs=[server])
    again = podman.inspect(dest)
    assert again["Digest"] == pushed
    assert "sha256:" + again["Id"] == image.config_digest
    podman.podman("rmi", "--force", dest)

"""Real clients pulling Docker Hub names through cargohold, configured as each client's docs
say (the README's "Mirror Docker Hub" section): dockerd's ``registry-mirrors`` against a
root-level ``proxy``, and podman / skopeo ``registries.conf`` and containerd ``hosts.toml``
against a ``hub`` prefix.

Nothing here can reach Docker Hub, and each client silently falls back to it when the mirror
fails, so a pull that succeeds came from the mirror; the tests also check that the mirror's
upstream was asked (through the counting proxy) and that the mirror stored the layers.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from support.clients import (
    Containerd,
    DaemonUnavailable,
    DockerDaemon,
    Podman,
    Skopeo,
    short_tmpdir,
)
from support.images import push_image

from .conftest import UPSTREAM_PASSWORD, UPSTREAM_USER, blob_path, mirror_entry

pytestmark = pytest.mark.clients


def _hub_name() -> str:
    """A Docker Hub official-image name nobody else uses: ``library/<hex>``."""
    return f"library/m{uuid.uuid4().hex[:11]}"


def _registries_conf(path: Path, mirror_host: str) -> Path:
    path.write_text(
        "\n".join(
            [
                'unqualified-search-registries = ["docker.io"]',
                "[[registry]]",
                'prefix = "docker.io"',
                'location = "docker.io"',
                "[[registry.mirror]]",
                f'location = "{mirror_host}/hub"',
                "insecure = true",
                "",
            ]
        )
    )
    return path


def test_dockerd_registry_mirrors_root_proxy(
    make_registry, proxy, upstream, upstream_session, images, tmp_path: Path
):
    image = images.get(seed=1321)
    name = _hub_name()
    push_image(upstream.url, name, image, session=upstream_session)
    reg = make_registry(
        config={
            "proxy": {
                "remoteurl": proxy.url,
                "username": UPSTREAM_USER,
                "password": UPSTREAM_PASSWORD,
            }
        }
    )
    if not DockerDaemon.available():
        pytest.skip("dockerd/docker are not installed")
    daemon_json = tmp_path / "daemon.json"  # as the README shows it
    daemon_json.write_text(
        json.dumps({"registry-mirrors": [reg.url], "insecure-registries": [reg.host]})
    )
    daemon = DockerDaemon(extra_args=["--config-file", str(daemon_json)])
    try:
        daemon.start()
    except DaemonUnavailable as exc:
        pytest.skip(f"dockerd cannot start here: {exc}")
    try:
        short = name.split("/", 1)[1]
        daemon.docker("pull", f"{short}:latest", logs=[reg])  # docker.io/library/<short>
        image_id = daemon.docker("inspect", "--format", "{{.Id}}", f"{short}:latest").stdout
        assert image_id.strip() == image.config_digest
    finally:
        daemon.stop()
    assert proxy.count("GET", f"/v2/{name}/blobs/{image.layer_digests[0]}") == 1
    assert blob_path(reg.root, image.layer_digests[0]).exists()
    assert f"/v2/{name}/manifests/latest" in reg.log_tail(50000)


def test_podman_and_skopeo_registries_conf_mirror_with_a_path(
    make_registry, proxy, upstream, upstream_session, images, tmp_path: Path
):
    if not Podman.available():
        pytest.skip("podman is not installed")
    image = images.get(seed=1322)
    name = _hub_name()
    push_image(upstream.url, name, image, session=upstream_session)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    conf = _registries_conf(tmp_path / "registries.conf", reg.host)
    podman = Podman()
    try:
        os.environ["CONTAINERS_REGISTRIES_CONF"] = str(conf)
        try:
            podman.podman("pull", f"docker.io/{name}:latest", logs=[reg])
        finally:
            del os.environ["CONTAINERS_REGISTRIES_CONF"]
        assert podman.inspect(f"docker.io/{name}:latest")["Id"] == image.config_digest.split(":")[1]
    finally:
        podman.stop()
    assert proxy.count("GET", f"/v2/{name}/blobs/{image.layer_digests[0]}") == 1
    # skopeo reads the same file: served from the mirror's cache, no new blob GET upstream.
    out = short_tmpdir("chsk") / "layout"
    Skopeo([reg]).run(
        "--registries-conf", str(conf), "copy", f"docker://docker.io/{name}:latest", f"oci:{out}:x"
    )
    assert (out / "blobs/sha256" / image.layer_digests[0].split(":")[1]).exists()
    assert proxy.count("GET", f"/v2/{name}/blobs/{image.layer_digests[0]}") == 1
    assert blob_path(reg.root, image.layer_digests[0]).exists()


def test_containerd_hosts_toml_override_path(
    make_registry, proxy, upstream, upstream_session, images, tmp_path: Path
):
    if not Containerd.available():
        pytest.skip("containerd/ctr are not installed")
    image = images.get(seed=1323)
    name = _hub_name()
    push_image(upstream.url, name, image, session=upstream_session)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    hosts = tmp_path / "certs.d"
    (hosts / "docker.io").mkdir(parents=True)
    (hosts / "docker.io" / "hosts.toml").write_text(
        "\n".join(
            [
                'server = "https://registry-1.docker.io"',
                f'[host."http://{reg.host}/v2/hub"]',
                '  capabilities = ["pull", "resolve"]',
                "  override_path = true",
                "",
            ]
        )
    )
    daemon = Containerd()
    try:
        daemon.start()
    except DaemonUnavailable as exc:
        pytest.skip(f"containerd cannot start here: {exc}")
    try:
        ref = f"docker.io/{name}:latest"
        daemon.ctr("images", "pull", "--hosts-dir", str(hosts), ref, logs=[reg])
        assert daemon.image_digest(ref) == image.manifest_digest
    finally:
        daemon.stop()
    assert proxy.count("GET", f"/v2/{name}/blobs/{image.layer_digests[0]}") == 1
    assert blob_path(reg.root, image.layer_digests[0]).exists()
    # containerd resolves the tag with a HEAD (asked upstream with a HEAD, nothing fetched),
    # then GETs the manifest by digest: one upstream GET of it in all.
    assert proxy.count("GET", f"/v2/{name}/manifests/") == 1, proxy.requests
    assert proxy.count("HEAD", f"/v2/{name}/manifests/latest") >= 1

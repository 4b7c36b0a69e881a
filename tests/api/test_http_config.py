"""``http.prefix`` and ``http.host``: routes and every Location/Link header follow them."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from support.servers import RegistryProcess, cargohold_command, cargohold_env

from .helpers import (
    OCI_MANIFEST,
    assert_error,
    image_manifest,
    rand_bytes,
    repo,
    sha256,
    with_query,
)


class _Prefixed(RegistryProcess):
    """A cargohold whose readiness probe goes to ``/registry/v2/`` (make_registry probes
    ``/v2/``, which a prefixed registry rightly answers with 404)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}/registry"


@pytest.fixture
def prefixed(tmp_path):
    server = _Prefixed(
        "cargohold",
        cargohold_command(1),
        tmp_path,
        config={"http": {"prefix": "/registry/"}},
        env=cargohold_env(),
    )
    server.start()
    yield server
    server.stop()


def test_prefix(prefixed):
    base = prefixed.url
    root = f"http://{prefixed.host}"
    r = requests.get(f"{base}/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert_error(requests.get(f"{root}/v2/{repo()}/tags/list"), 404)
    name = repo()
    r = requests.post(f"{base}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    assert loc.startswith(f"/registry/v2/{name}/blobs/uploads/"), loc
    data = rand_bytes(100)
    r = requests.patch(root + loc, data=data)
    assert r.status_code == 202
    assert r.headers["Location"].startswith("/registry/v2/")
    r = requests.put(with_query(root + r.headers["Location"], f"digest={sha256(data)}"))
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/registry/v2/{name}/blobs/{sha256(data)}"
    assert requests.get(root + r.headers["Location"]).content == data

    # a manifest: build it against the prefixed base
    m = image_manifest(base, name)
    for i in range(3):
        r = requests.put(
            f"{base}/v2/{name}/manifests/t{i}",
            data=m.data,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == f"/registry/v2/{name}/manifests/{m.digest}"
    r = requests.get(f"{base}/v2/{name}/tags/list?n=1")
    assert r.json()["tags"] == ["t0"]
    link = r.headers["Link"]
    target = link[link.index("<") + 1 : link.index(">")]
    assert urlsplit(target).path == f"/registry/v2/{name}/tags/list"
    assert requests.get(root + target).json()["tags"] == ["t1"]


def test_host(make_registry):
    reg = make_registry(config={"http": {"host": "https://registry.example.com"}})
    name = repo()
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    assert loc.startswith(f"https://registry.example.com/v2/{name}/blobs/uploads/"), loc
    path = urlsplit(loc).path
    data = b"behind a proxy"
    r = requests.put(with_query(reg.url + path, f"digest={sha256(data)}"), data=data)
    assert r.status_code == 201
    assert r.headers["Location"] == (f"https://registry.example.com/v2/{name}/blobs/{sha256(data)}")

"""An HTTPS upstream: trusted through ``cafile``, refused without it, accepted with
``insecure: true`` (an upstream cargohold with a certificate from ``cargohold cert``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from auth.helpers import SecureRegistry, make_pki, tls_config
from support.images import push_image
from support.servers import cargohold_command, cargohold_env, unique_repo

from .test_mirror_pull import _pull


@pytest.fixture
def tls_upstream(tmp_path: Path):  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    server = SecureRegistry(
        "upstream-tls",
        cargohold_command(),
        tmp_path / "upstream",
        config={"http": {"tls": tls_config(pki)}},
        env=cargohold_env(),
        ca=pki.ca,
    )
    server.start()
    yield server, pki
    server.stop()


def test_https_upstream_cafile_and_insecure(make_registry, tls_upstream, images):
    upstream, pki = tls_upstream
    image = images.get(seed=1351)
    remote = unique_repo("library")
    session = requests.Session()
    session.verify = str(pki.ca)
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override session.verify
    push_image(upstream.url, remote, image, session=session)
    entries = [
        {"prefix": "ca", "remoteurl": upstream.url, "cafile": str(pki.ca)},
        {"prefix": "noca", "remoteurl": upstream.url},
        {"prefix": "insecure", "remoteurl": upstream.url, "insecure": True},
    ]
    reg = make_registry(config={"mirrors": entries})
    assert _pull(reg.url, f"ca/{remote}", "latest")["manifest"] == image.top.data
    assert _pull(reg.url, f"insecure/{remote}", "latest")["manifest"] == image.top.data
    r = requests.get(f"{reg.url}/v2/noca/{remote}/manifests/latest")
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "certificate verify failed" in reg.log_tail(50000).lower()

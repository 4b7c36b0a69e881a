"""Fixtures of the mirror tests: an upstream (the reference registry with htpasswd) behind a
counting proxy, and cargohold mirrors of it."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.servers import RegistryProcess, reference_process
from support.upstreamproxy import UpstreamProxy

UPSTREAM_USER = "mirror"
UPSTREAM_PASSWORD = "mirror-Upstr3am-pw"


def htpasswd_line(user: str, password: str) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """The reference registry with htpasswd auth: what the mirrors pull from."""
    import shutil

    if shutil.which("docker-registry") is None:
        pytest.skip("the reference registry (docker-registry) is not installed")
    workdir = tmp_path_factory.mktemp("upstream")
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(htpasswd_line(UPSTREAM_USER, UPSTREAM_PASSWORD))
    config = {"auth": {"htpasswd": {"realm": "upstream", "path": str(htpasswd)}}}
    server = reference_process(workdir, config=config)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream_session() -> requests.Session:
    s = requests.Session()
    s.auth = (UPSTREAM_USER, UPSTREAM_PASSWORD)
    return s


@pytest.fixture
def proxy(upstream: RegistryProcess) -> Iterator[UpstreamProxy]:
    """A counting proxy in front of the upstream, one per test."""
    p = UpstreamProxy(upstream.url).start()
    yield p
    p.stop()


def mirror_entry(proxy: UpstreamProxy, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "prefix": "hub",
        "remoteurl": proxy.url,
        "username": UPSTREAM_USER,
        "password": UPSTREAM_PASSWORD,
    }
    entry.update(extra)
    return entry


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


MakeRegistry = Callable[..., RegistryProcess]


def blob_path(root: Path, digest: str) -> Path:
    alg, _, hexd = digest.partition(":")
    return root / "docker/registry/v2/blobs" / alg / hexd[:2] / hexd / "data"


def seed_upstream(upstream: RegistryProcess, session: requests.Session, image: Any) -> str:
    """Push ``image`` to a new ``library/<hex>`` repository upstream; returns its name."""
    from support.images import push_image
    from support.servers import unique_repo

    remote = unique_repo("library")
    push_image(upstream.url, remote, image, session=session)
    return remote

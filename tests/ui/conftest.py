"""Fixtures of the web UI's tests: a registry with logins, an access policy and seeded images.

``ui_registry`` (per module, so each module's deletes stay its own): cargohold with htpasswd
auth, ``storage.delete`` on, and this policy:

- alice: admin (everything, the storage page);
- dan: pull, push and delete on ``team/**``;
- eve: nothing of her own;
- anonymous (everyone): pull on ``public/**``.

Seeded (``seed.seed``): ``team/app`` (tags 1.0, 1.1, latest on one image with an SBOM and a
signature as referrers; ``old`` on another), ``team/api:2.0`` (a two-platform index),
``public/tools:stable``, ``private/vault:1`` (admins only).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from support.images import ImageCache
from support.servers import RegistryProcess, cargohold_process, free_port

from cargohold.auth import htpasswd

from .seed import Seeded, seed

PASSWORDS = {"alice": "alice-UI-pw-1", "dan": "dan-UI-pw-22", "eve": "eve-UI-pw-333"}
POLICY = {
    "admins": ["alice"],
    "rules": [
        {"repositories": ["public/**"], "anonymous": True, "actions": ["pull"]},
        {"repositories": ["team/**"], "users": ["dan"], "actions": ["pull", "push", "delete"]},
    ],
}


@dataclass
class UiRegistry:
    server: RegistryProcess
    seeded: Seeded
    htpasswd: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def debug_url(self) -> str:
        return f"http://{self.server.config['http']['debug']['addr']}"


def basic(user: str) -> str:
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return f"Basic {token}"


@pytest.fixture(scope="module")
def ui_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiRegistry]:
    workdir = tmp_path_factory.mktemp("ui-registry")
    users = workdir / "htpasswd"
    for user, password in PASSWORDS.items():
        htpasswd.set_user(str(users), user, password, cost=4)
    config = {
        "auth": {"htpasswd": {"realm": "cargohold-ui-test", "path": str(users)}},
        "access": POLICY,
        "http": {"secret": "ui-test-secret", "debug": {"addr": f"127.0.0.1:{free_port()}"}},
        # pulls are recorded (and shown) only with retention; this policy matches nothing
        "retention": {"pullflushinterval": "1s", "policies": [{"repositories": ["none/*"]}]},
    }
    server = cargohold_process(workdir, config=config).start()
    try:
        admin = requests.Session()
        admin.headers["Authorization"] = basic("alice")
        images = ImageCache(tmp_path_factory.mktemp("ui-images"))
        yield UiRegistry(server, seed(server.url, images, admin), users)
    finally:
        server.stop()

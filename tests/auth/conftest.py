"""Fixtures for the security tests: a PKI made by ``cargohold cert``, htpasswd files made by
``cargohold htpasswd``, and ``secure_registry`` to start HTTPS (optionally mutual TLS)
registries. The shared ``make_registry`` probes readiness without the test CA or a client
certificate, so TLS servers here are started with ``secure_registry`` (see helpers.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support.servers import cargohold_command, cargohold_env

from cargohold.auth import htpasswd

from .helpers import PASSWORDS, Pki, SecureFactory, SecureRegistry, make_pki, tls_config


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An htpasswd file with alice, bob and carol (tests edit copies: ``htpasswd_file``).

    Written with the library behind ``cargohold htpasswd`` (cost 4, fast); the command
    itself is tested in test_commands.py.
    """
    path = tmp_path_factory.mktemp("users") / "htpasswd"
    for user, password in PASSWORDS.items():
        htpasswd.set_user(str(path), user, password, cost=4)
    return path


@pytest.fixture
def htpasswd_file(users_file: Path, tmp_path: Path) -> Path:
    """A per-test copy of ``users_file`` that a test may edit."""
    path = tmp_path / "htpasswd"
    path.write_bytes(users_file.read_bytes())
    path.chmod(0o600)
    return path


@pytest.fixture
def secure_registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureFactory]:
    """``secure_registry(config, client=None, env=None, workers=1)``: cargohold with
    ``http.tls`` from the session PKI (unless the config sets its own), stopped at teardown."""
    started: list[SecureRegistry] = []

    def start(
        config: Mapping[str, Any] | None = None,
        *,
        client: tuple[Path, Path] | None = None,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
    ) -> SecureRegistry:
        merged: dict[str, Any] = dict(config or {})
        http = dict(merged.get("http") or {})
        http.setdefault("tls", tls_config(pki))
        merged["http"] = http
        server = SecureRegistry(
            "cargohold-tls",
            cargohold_command(workers),
            tmp_path_factory.mktemp("secure"),
            config=merged,
            env=cargohold_env(env),
            ca=pki.ca,
            client=client,
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in reversed(started):
        server.stop()

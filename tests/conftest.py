"""Fixtures shared by every test: registry servers, test images, client daemons.

Servers (each pytest-xdist worker gets its own, on ports from ``free_port``):

- ``registry`` (session): cargohold with the default test config. Shared: tests must
  use their own repository names (``unique_repo("prefix")``).
- ``make_registry(config=None, workers=1, env=None, root=None)`` (function): a fresh
  cargohold per call; ``config`` is deep-merged into the registry:2 YAML.
- ``reference_registry`` (session) / ``make_reference_registry(root=None, config=None,
  env=None)``: the CNCF reference registry (Debian ``docker-registry``); skipped if absent.

Images and clients:

- ``images.get(seed=0, multi_arch=False, busybox=False, tag="latest")``: cached
  deterministic OCI layouts (``support.images.TestImage``).
- ``skopeo`` (session), ``dockerd`` (session, skips if dockerd cannot run here),
  ``containerd`` (session, skips likewise), ``podman`` (session, private storage).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # make `import support` work whatever the rootdir/import mode
    sys.path.insert(0, _TESTS_DIR)

from support.clients import (  # noqa: E402
    Containerd,
    DaemonUnavailable,
    DockerDaemon,
    Podman,
    Skopeo,
)
from support.images import ImageCache  # noqa: E402
from support.servers import (  # noqa: E402
    RegistryProcess,
    cargohold_process,
    reference_available,
    reference_process,
)
from support.stores import MotoServer, RedisServer  # noqa: E402

RegistryFactory = Callable[..., RegistryProcess]


class _Service(Protocol):
    def start(self) -> object: ...

    def stop(self) -> object: ...


ServiceT = TypeVar("ServiceT", bound=_Service)


def _serving(server: ServiceT) -> Iterator[ServiceT]:
    """The body of a session fixture: start ``server``, hand it out, stop it at teardown."""
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A cargohold server shared by the whole session (per xdist worker)."""
    yield from _serving(cargohold_process(tmp_path_factory.mktemp("cargohold")))


class _Factory:
    """Starts servers on demand and stops all of them at teardown."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, kind: str) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.kind = kind
        self.servers: list[RegistryProcess] = []

    def start(
        self,
        *,
        config: Mapping[str, Any] | None = None,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        root: Path | None = None,
    ) -> RegistryProcess:
        workdir = self.tmp_path_factory.mktemp(self.kind)
        if self.kind == "cargohold":
            server = cargohold_process(workdir, config=config, workers=workers, env=env, root=root)
        else:
            server = reference_process(workdir, config=config, env=env, root=root)
        self.servers.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            server.stop()


@pytest.fixture
def make_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryFactory]:
    """``make_registry(config=None, workers=1, env=None, root=None) -> RegistryProcess``.

    Each call starts a new cargohold (own port and, unless ``root`` or the config
    says otherwise, own storage); all are stopped when the test ends.
    """
    factory = _Factory(tmp_path_factory, "cargohold")

    def make(
        config: Mapping[str, Any] | None = None,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        root: Path | None = None,
    ) -> RegistryProcess:
        return factory.start(config=config, workers=workers, env=env, root=root)

    yield make
    factory.stop_all()


def _require_reference() -> None:
    if not reference_available():
        pytest.skip("reference registry binary `docker-registry` is not installed")


@pytest.fixture(scope="session")
def reference_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """The reference registry (distribution 2.x) shared by the session; skips if absent."""
    _require_reference()
    yield from _serving(reference_process(tmp_path_factory.mktemp("reference")))


@pytest.fixture
def make_reference_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RegistryFactory]:
    """``make_reference_registry(root=None, config=None, env=None) -> RegistryProcess``."""
    _require_reference()
    factory = _Factory(tmp_path_factory, "reference-registry")

    def make(
        root: Path | None = None,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RegistryProcess:
        return factory.start(config=config, env=env, root=root)

    yield make
    factory.stop_all()


# --------------------------------------------------------------------------- images


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    """``images.get(seed=0, multi_arch=False, busybox=False, tag="latest")``."""
    return ImageCache(tmp_path_factory.mktemp("images"))


# --------------------------------------------------------------------------- clients


@pytest.fixture(scope="session")
def skopeo() -> Skopeo:
    return Skopeo()


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    """A private dockerd for the session; tests using it skip if it cannot run here."""
    if not DockerDaemon.available():
        pytest.skip("dockerd/docker are not installed")
    daemon = DockerDaemon()
    try:
        daemon.start()
    except DaemonUnavailable as exc:
        pytest.skip(f"dockerd cannot start in this environment: {exc}")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """A private containerd for the session; tests using it skip if it cannot run here."""
    if not Containerd.available():
        pytest.skip("containerd/ctr are not installed")
    daemon = Containerd()
    try:
        daemon.start()
    except DaemonUnavailable as exc:
        pytest.skip(f"containerd cannot start in this environment: {exc}")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """podman with private vfs storage for the session (pull/push only)."""
    if not Podman.available():
        pytest.skip("podman is not installed")
    client = Podman()
    yield client
    client.stop()


# Object store and cache servers, shared by tests/s3 and tests/scale (one each per session).
@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from _serving(MotoServer(tmp_path_factory.mktemp("moto")))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    yield from _serving(RedisServer(tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def s3_cargohold(
    tmp_path_factory: pytest.TempPathFactory, moto: MotoServer
) -> Iterator[RegistryProcess]:
    """A cargohold on S3 storage (moto), shared by the session like ``registry``, so the real
    client suite runs on S3 too. Blob GETs redirect to presigned URLs, as in production."""
    config = {"storage": moto.storage_section(moto.new_bucket()), "http": {"secret": "clients"}}
    yield from _serving(cargohold_process(tmp_path_factory.mktemp("cargohold-s3"), config=config))

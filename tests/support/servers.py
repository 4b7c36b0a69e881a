"""Start registry servers (cargohold or the reference ``docker-registry``) for tests.

Each server runs in its own process group with a registry:2-format YAML config,
its own storage root and a port from :func:`free_port`, so parallel pytest-xdist
workers never share anything. Stopping kills the whole process group.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests
import yaml

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
REFERENCE_BINARY = "docker-registry"

CommandFactory = Callable[[Path], list[str]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening_sockets(port: int) -> set[str] | None:
    """``socket:[inode]`` of every TCP socket listening on ``port``; None without /proc."""
    found: set[str] = set()
    tables = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        tables += 1
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                found.add(f"socket:[{inode}]")
    return found if tables else None


def listens(pgid: int, port: int) -> bool:
    """Whether a process of group ``pgid`` (a server started with ``start_new_session``: its
    workers too) holds a socket listening on ``port``; True where /proc cannot tell."""
    wanted = _listening_sockets(port)
    if wanted is None:
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:  # pid (comm) state ppid pgrp
                continue
            for fd in os.scandir(f"{entry.path}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        return True
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return False


def unique_repo(prefix: str = "test") -> str:
    """A repository name no other test (or xdist worker) uses: ``<prefix>/<12 hex>``."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``base`` updated recursively with ``extra``; dicts merge, everything else replaces.

    A value of ``None`` in ``extra`` deletes the key (handy to drop e.g. ``storage.delete``).
    """
    out = copy.deepcopy(dict(base))
    for key, value in (extra or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def registry_config(
    root: Path, port: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The default registry:2 test config, deep-merged with ``extra``."""
    base: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    return deep_merge(base, extra)


def cargohold_command(workers: int = 1) -> CommandFactory:
    """``python -m cargohold serve CONFIG [--workers N]``."""

    def factory(config_path: Path) -> list[str]:
        cmd = [sys.executable, "-m", "cargohold", "serve", str(config_path)]
        if workers != 1:
            cmd += ["--workers", str(workers)]
        return cmd

    return factory


SRC_DIR = Path(__file__).resolve().parents[2] / "src"


def cargohold_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a cargohold process: ``src/`` first on PYTHONPATH (works uninstalled)."""
    pythonpath = [str(SRC_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(pythonpath), **(extra or {})}


def cargohold_process(
    workdir: Path,
    *,
    config: Mapping[str, Any] | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> RegistryProcess:
    """A (not yet started) cargohold server: ``python -m cargohold serve CONFIG``."""
    return RegistryProcess(
        "cargohold",
        cargohold_command(workers),
        workdir,
        config=config,
        env=cargohold_env(env),
        root=root,
    )


def reference_process(
    workdir: Path,
    *,
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> RegistryProcess:
    """A (not yet started) reference registry: ``docker-registry serve CONFIG``."""
    return RegistryProcess(
        "reference-registry", reference_command(), workdir, config=config, env=env, root=root
    )


def reference_available() -> bool:
    return shutil.which(REFERENCE_BINARY) is not None


def reference_command() -> CommandFactory:
    """The CNCF distribution reference registry (Debian ``docker-registry``)."""

    def factory(config_path: Path) -> list[str]:
        return [REFERENCE_BINARY, "serve", str(config_path)]

    return factory


class ServerStartError(RuntimeError):
    """The server exited or never answered ``GET /v2/`` in time."""


class RegistryProcess:
    """One registry server process with its own config, storage root and log file.

    ``workdir`` holds ``config.yml`` and ``server.log``; storage goes to ``root``
    (default ``workdir/storage``) unless ``config`` overrides
    ``storage.filesystem.rootdirectory``. ``config`` is deep-merged into the default
    test config; ``env`` is added to the server's environment.
    """

    def __init__(
        self,
        name: str,
        command: CommandFactory,
        workdir: Path,
        *,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        root: Path | None = None,
        port: int | None = None,
        ready_timeout: float = READY_TIMEOUT,
        ready_scheme: str = "http",
    ) -> None:
        self.name = name
        self._command = command
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._extra_config = dict(config or {})
        self._extra_env = dict(env or {})
        self._fixed_port = port
        self._default_root = root if root is not None else workdir / "storage"
        self.ready_timeout = ready_timeout
        self.ready_scheme = ready_scheme
        self.config_path = workdir / "config.yml"
        self.log_path = workdir / "server.log"
        self.port = port or free_port()
        self.config: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # ------------------------------------------------------------------ addresses
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: what goes in image references (``HOST/repo:tag``)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` if started with ``ready_scheme="https"``)."""
        return f"{self.ready_scheme}://{self.host}"

    @property
    def root(self) -> Path:
        """The filesystem storage root the server was configured with."""
        fs = self.config.get("storage", {}).get("filesystem") or {}
        return Path(fs.get("rootdirectory", self._default_root))

    @property
    def command(self) -> list[str]:
        return self._command(self.config_path)

    # ------------------------------------------------------------------ lifecycle
    def write_config(self) -> None:
        self.config = registry_config(self._default_root, self.port, self._extra_config)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self) -> RegistryProcess:
        """Start the server; retries on a new port if the chosen one was taken meanwhile."""
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
            self.write_config()
            self.root.mkdir(parents=True, exist_ok=True)
            self._spawn()
            try:
                self._wait_ready()
                return self
            except ServerStartError:
                in_use = "address already in use" in self.log_tail(4000).lower()
                self.stop()
                if not in_use or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        env = {**os.environ, **self._extra_env}
        # distribution panics on an S3 driver when this is set; never useful for tests
        env.pop("AWS_CA_BUNDLE", None)
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"\n=== {self.name}: {' '.join(self.command)}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,  # own process group: stop() kills workers too
        )

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready\n"
                    f"command: {' '.join(self.command)}\n{self.describe_log()}"
                )
            try:
                resp = requests.get(f"{self.url}/v2/", timeout=2, verify=False)
                if resp.status_code in (200, 401) and listens(self.proc.pid, self.port):
                    return
                # Another process may have taken the port since free_port(): ours then exits
                # with "address already in use" (start() tries another port), and until then
                # the answer is that process's, not ours.
                last_error = f"GET /v2/ -> {resp.status_code}, from another process"
            except requests.RequestException as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise ServerStartError(
            f"{self.name} not ready after {self.ready_timeout:.0f}s ({last_error})\n"
            f"command: {' '.join(self.command)}\n{self.describe_log()}"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group, escalate to SIGKILL after a few seconds."""
        proc, self.proc = self.proc, None
        if proc is not None:
            kill_process_group(proc, sig)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> RegistryProcess:
        """Stop and start again on the same port, config and storage."""
        self.stop()
        self._fixed_port = self.port
        return self.start()

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ diagnostics
    def log_tail(self, max_chars: int = 6000) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-max_chars:].decode(errors="replace")

    def describe_log(self, max_chars: int = 6000) -> str:
        return f"--- {self.name} log tail ({self.log_path}) ---\n{self.log_tail(max_chars)}"

    def __repr__(self) -> str:
        return f"<RegistryProcess {self.name} {self.url} root={self.root}>"


def kill_process_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """SIGTERM (or ``sig``) the process group of ``proc``, then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)
    # a worker of the group may outlive the leader: always finish with SIGKILL
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)


def start_cargohold(
    workdir: Path,
    *,
    config: Mapping[str, Any] | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> RegistryProcess:
    """Start cargohold and wait until it answers; the caller must ``stop()`` it."""
    return cargohold_process(workdir, config=config, workers=workers, env=env, root=root).start()


def start_reference(
    workdir: Path,
    *,
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> RegistryProcess:
    """Start the reference registry and wait until it answers; the caller must ``stop()`` it."""
    return reference_process(workdir, config=config, env=env, root=root).start()


@contextlib.contextmanager
def running(server: RegistryProcess) -> Iterator[RegistryProcess]:
    """``with running(RegistryProcess(...)) as srv:`` starts and always stops it."""
    try:
        yield server.start()
    finally:
        server.stop()

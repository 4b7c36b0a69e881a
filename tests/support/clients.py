"""Drive real registry clients: skopeo, a private dockerd, a private containerd.

Every command goes through :func:`run`, which raises :class:`CommandError` with the
command line, exit code, stdout, stderr and the tail of the relevant server logs,
so a failing client test explains itself.

Daemons live under short ``/tmp/ch*`` directories (unix socket paths are limited
to 108 bytes) and are torn down completely: process group killed, every mount
below their roots unmounted, directories removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .servers import kill_process_group

DEFAULT_TIMEOUT = 120.0
DAEMON_READY_TIMEOUT = 60.0


class HasLog(Protocol):
    """Anything that can describe its log (servers, daemons) for failure messages."""

    def describe_log(self, max_chars: int = ...) -> str: ...


class CommandError(AssertionError):
    """A client command failed; the message carries everything needed to debug it."""


def _fmt_cmd(cmd: Sequence[str]) -> str:
    return " ".join(cmd)


def run(
    cmd: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    logs: Iterable[HasLog] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (no shell, no stdin unless ``input``), capture text output.

    With ``check`` (the default) a non-zero exit or a timeout raises
    :class:`CommandError` including the tail of each object in ``logs``.
    """
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            list(cmd),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            _failure_text(cmd, f"timed out after {timeout:.0f}s", exc.stdout, exc.stderr, logs)
        ) from None
    if check and proc.returncode != 0:
        raise CommandError(
            _failure_text(cmd, f"exit code {proc.returncode}", proc.stdout, proc.stderr, logs)
        )
    return proc


def _failure_text(
    cmd: Sequence[str],
    what: str,
    stdout: str | bytes | None,
    stderr: str | bytes | None,
    logs: Iterable[HasLog],
) -> str:
    def text(v: str | bytes | None) -> str:
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        return (v or "").strip()[-8000:]

    parts = [
        f"command failed ({what}): {_fmt_cmd(cmd)}",
        f"--- stdout ---\n{text(stdout)}",
        f"--- stderr ---\n{text(stderr)}",
    ]
    parts += [source.describe_log(4000) for source in logs]
    return "\n".join(parts)


# --------------------------------------------------------------------------- skopeo


class Skopeo:
    """``skopeo`` with TLS verification off for registries (plain HTTP on loopback).

    ``logs`` (e.g. the servers under test) are appended to failure messages.
    """

    def __init__(self, logs: Iterable[HasLog] = (), timeout: float = DEFAULT_TIMEOUT) -> None:
        self.logs = list(logs)
        self.timeout = timeout

    def with_logs(self, *logs: HasLog) -> Skopeo:
        return Skopeo([*self.logs, *logs], self.timeout)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            ["skopeo", "--insecure-policy", *args],
            timeout=self.timeout,
            check=check,
            logs=self.logs,
        )

    def copy(
        self,
        src: str,
        dst: str,
        *,
        all_images: bool = False,
        extra: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``skopeo copy SRC DST``; ``all_images`` copies every manifest of an index."""
        args = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false"]
        if all_images:
            args.append("--all")
        return self.run(*args, *extra, src, dst, check=check)

    def copy_with_digest(
        self, src: str, dst: str, *, all_images: bool = False, extra: Sequence[str] = ()
    ) -> str:
        """Copy and return the digest of the manifest written (``--digestfile``)."""
        with tempfile.TemporaryDirectory(prefix="chsk") as tmp:
            digest_file = Path(tmp) / "digest"
            self.copy(
                src, dst, all_images=all_images, extra=[*extra, "--digestfile", str(digest_file)]
            )
            return digest_file.read_text().strip()

    def inspect(self, ref: str, *, extra: Sequence[str] = ()) -> dict[str, Any]:
        """``skopeo inspect`` parsed (Digest, RepoTags, Architecture, Layers, ...)."""
        out = self.run("inspect", "--tls-verify=false", *extra, ref).stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def inspect_raw(self, ref: str) -> bytes:
        """``skopeo inspect --raw``: the manifest bytes exactly as served."""
        proc = subprocess.run(
            ["skopeo", "--insecure-policy", "inspect", "--raw", "--tls-verify=false", ref],
            capture_output=True,
            timeout=self.timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            raise CommandError(
                _failure_text(
                    proc.args, f"exit code {proc.returncode}", proc.stdout, proc.stderr, self.logs
                )
            )
        return proc.stdout

    def list_tags(self, ref: str) -> list[str]:
        """``skopeo list-tags docker://HOST/repo`` → the tag list."""
        out = self.run("list-tags", "--tls-verify=false", ref).stdout
        tags: list[str] = json.loads(out)["Tags"]
        return tags

    def delete(self, ref: str) -> subprocess.CompletedProcess[str]:
        return self.run("delete", "--tls-verify=false", ref)


# --------------------------------------------------------------------------- daemons


def short_tmpdir(prefix: str) -> Path:
    """A fresh directory directly under /tmp (short, for unix socket paths)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (ready to unmount)."""
    root_s = str(root.resolve())
    points: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            point = fields[4].replace("\\040", " ")
            if point == root_s or point.startswith(root_s + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(root: Path) -> None:
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


class DaemonUnavailable(RuntimeError):
    """The daemon cannot run in this environment (tests using it are skipped)."""


class _Daemon:
    name = "daemon"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.log_path = base / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    def _spawn(self, cmd: list[str], env: Mapping[str, str] | None = None) -> None:
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    def _wait(self, probe: Sequence[str], timeout: float = DAEMON_READY_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonUnavailable(
                    f"{self.name} exited with {self.proc.returncode}\n{self.describe_log()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                probe_proc = subprocess.run(
                    list(probe), capture_output=True, text=True, timeout=10, check=False
                )
                if probe_proc.returncode == 0:
                    return
                last = probe_proc.stderr.strip()
            time.sleep(0.25)
        raise DaemonUnavailable(
            f"{self.name} not ready after {timeout:.0f}s: {last}\n{self.describe_log()}"
        )

    def log_tail(self, max_chars: int = 6000) -> str:
        try:
            return self.log_path.read_bytes()[-max_chars:].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def describe_log(self, max_chars: int = 6000) -> str:
        return f"--- {self.name} log tail ({self.log_path}) ---\n{self.log_tail(max_chars)}"

    def stop(self, remove: bool = True) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            kill_process_group(proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        unmount_all(self.base)
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)


class DockerDaemon(_Daemon):
    """A private ``dockerd`` (vfs storage, no networking setup) with its own socket.

    Use :meth:`docker` to run CLI commands against it; the client config dir is
    private too, so no credentials leak in or out.
    """

    name = "dockerd"

    def __init__(self, base: Path | None = None, extra_args: Sequence[str] = ()) -> None:
        super().__init__(base or short_tmpdir("chd"))
        self.extra_args = list(extra_args)  # e.g. --config-file with registry-mirrors
        self.socket = self.base / "d.sock"
        self.env = {
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.base / "cli"),
        }

    @staticmethod
    def available() -> bool:
        return shutil.which("dockerd") is not None and shutil.which("docker") is not None

    def start(self) -> DockerDaemon:
        if not self.available():
            raise DaemonUnavailable("dockerd/docker not installed")
        (self.base / "cli").mkdir(parents=True, exist_ok=True)
        cmd = [
            "dockerd",
            "--data-root", str(self.base / "data"),
            "--exec-root", str(self.base / "exec"),
            "-H", f"unix://{self.socket}",
            "--pidfile", str(self.base / "dockerd.pid"),
            "--storage-driver", "vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-masq=false",
            *self.extra_args,
        ]  # fmt: skip
        self._spawn(cmd)
        try:
            self._wait(["docker", "-H", f"unix://{self.socket}", "info"])
        except DaemonUnavailable:
            self.stop()
            raise
        return self

    def docker(
        self,
        *args: str,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        logs: Iterable[HasLog] = (),
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["docker", *args], timeout=timeout, check=check, env=self.env, logs=[*logs, self]
        )

    def repo_digests(self, image: str) -> list[str]:
        """``docker inspect`` RepoDigests (``host/repo@sha256:...``) of a local image."""
        out = self.docker("inspect", "--format", "{{json .RepoDigests}}", image).stdout
        digests: list[str] = json.loads(out) or []
        return digests


_PUSH_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: (\d+)")


def parse_docker_push_digest(output: str) -> str:
    """The manifest digest from ``docker push`` output (``TAG: digest: sha256:... size: N``)."""
    match = _PUSH_DIGEST_RE.search(output)
    if not match:
        raise AssertionError(f"no digest in docker push output:\n{output}")
    return match.group(1)


class Containerd(_Daemon):
    """A private ``containerd`` (own root, state, socket; CRI disabled) plus ``ctr``.

    ``ctr`` commands use the ``native`` snapshotter, which works without overlayfs.
    """

    name = "containerd"
    snapshotter = "native"

    def __init__(self, base: Path | None = None) -> None:
        super().__init__(base or short_tmpdir("chc"))
        self.socket = self.base / "c.sock"
        self.config_path = self.base / "config.toml"

    @staticmethod
    def available() -> bool:
        return shutil.which("containerd") is not None and shutil.which("ctr") is not None

    def write_config(self) -> None:
        b = self.base
        self.config_path.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{b / "root"}"',
                    f'state = "{b / "state"}"',
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                    "[grpc]",
                    f'  address = "{self.socket}"',
                    "[ttrpc]",
                    f'  address = "{b / "t.sock"}"',
                    "[debug]",
                    '  address = ""',
                    "[metrics]",
                    '  address = ""',
                    "[plugins]",
                    '  [plugins."io.containerd.internal.v1.opt"]',
                    f'    path = "{b / "opt"}"',
                    "",
                ]
            )
        )

    def start(self) -> Containerd:
        if not self.available():
            raise DaemonUnavailable("containerd/ctr not installed")
        self.write_config()
        self._spawn(["containerd", "--config", str(self.config_path)])
        try:
            self._wait(["ctr", "--address", str(self.socket), "version"])
        except DaemonUnavailable:
            self.stop()
            raise
        return self

    def ctr(
        self,
        *args: str,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        logs: Iterable[HasLog] = (),
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["ctr", "--address", str(self.socket), *args],
            timeout=timeout,
            check=check,
            env={"CONTAINERD_SNAPSHOTTER": self.snapshotter},
            logs=[*logs, self],
        )

    def image_digest(self, ref: str) -> str:
        """Target digest of a local image (``ctr images ls``)."""
        out = self.ctr("images", "ls").stdout
        for line in out.splitlines()[1:]:
            cols = line.split()
            if cols and cols[0] == ref:
                return next(c for c in cols if c.startswith("sha256:"))
        raise AssertionError(f"image {ref} not in ctr images ls:\n{out}")


class Podman:
    """``podman`` with private storage (vfs) under a short directory; no daemon.

    ``podman run`` does not work in some sandboxes (crun setrlimit); pull/push do.
    """

    name = "podman"

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or short_tmpdir("chp")
        self.prefix = [
            "podman",
            "--root", str(self.base / "root"),
            "--runroot", str(self.base / "run"),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "none",
        ]  # fmt: skip

    @staticmethod
    def available() -> bool:
        return shutil.which("podman") is not None

    def podman(
        self,
        *args: str,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        logs: Iterable[HasLog] = (),
    ) -> subprocess.CompletedProcess[str]:
        return run([*self.prefix, *args], timeout=timeout, check=check, logs=logs)

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.podman("image", "inspect", ref).stdout)
        return data[0]

    def stop(self) -> None:
        run([*self.prefix, "rmi", "--all", "--force"], check=False, timeout=60)
        unmount_all(self.base)
        shutil.rmtree(self.base, ignore_errors=True)

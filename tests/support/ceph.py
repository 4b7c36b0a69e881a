"""A Ceph RADOS Gateway (``scripts/ceph-rgw.sh``) shared by every xdist worker of a test run.

A cluster takes a few seconds and ~230 MB to start, so one per worker would be waste: the first
worker to ask starts it in a directory shared by the run (beside the workers' base temp dirs),
under an ``fcntl`` lock; the others find its ``env`` file and reuse it. Each user is counted in
``users``; the last one to let go stops it. (A worker that finishes before another one asks
stops it, and the later one starts a new cluster: wasteful, never wrong.)
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .stores import S3Endpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ceph-rgw.sh"
COMMANDS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")


def rgw_available() -> bool:
    return all(shutil.which(c) for c in COMMANDS)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RgwServer(S3Endpoint):
    """The S3 endpoint of a running ``ceph-rgw.sh`` cluster (see :class:`S3Endpoint`)."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared
        self.cluster = shared / "cluster"
        self.endpoint = ""
        self.access_key = ""
        self.secret_key = ""

    def start(self) -> RgwServer:
        self.shared.mkdir(parents=True, exist_ok=True)
        with _locked(self.shared / "lock"):
            users = self._users()
            env = self.cluster / "env"
            if users == 0 or not env.exists():
                if self.cluster.exists():
                    self._run("stop")
                self._run("start")
            self._write_users(users + 1)
            values = dict(
                line.split("=", 1) for line in env.read_text().splitlines() if "=" in line
            )
        self.endpoint = values["RGW_ENDPOINT"]
        self.access_key = values["RGW_ACCESS_KEY"]
        self.secret_key = values["RGW_SECRET_KEY"]
        return self

    def stop(self) -> None:
        with _locked(self.shared / "lock"):
            users = max(0, self._users() - 1)
            self._write_users(users)
            if users == 0 and self.cluster.exists():
                self._run("stop")

    def _users(self) -> int:
        try:
            return int((self.shared / "users").read_text() or 0)
        except FileNotFoundError:
            return 0

    def _write_users(self, n: int) -> None:
        (self.shared / "users").write_text(str(n))

    def _run(self, action: str) -> None:
        done = subprocess.run(
            ["bash", str(SCRIPT), action, str(self.cluster)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"ceph-rgw.sh {action} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
                f"\n{self.describe_log()}"
            )

    def describe_log(self, max_chars: int = 4000) -> str:
        log = self.cluster / "log" / "client.rgw.a.log"
        try:
            tail = log.read_bytes()[-max_chars:].decode(errors="replace")
        except FileNotFoundError:
            tail = ""
        return f"--- radosgw log ({log}) ---\n{tail}"

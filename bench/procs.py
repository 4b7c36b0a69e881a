"""Helper processes of the storm benches (``mirror_storm.py``, ``replica_storm.py``): moto,
redis, haproxy, the servers under test.

Each runs in a session of its own, so that its whole process tree is one process group that
one signal reaches (a cargohold with ``--workers`` forks), writes its output to a log file in
its run directory (shown when it fails to start), and is SIGKILLed by the kernel if the bench
dies without stopping it (``PR_SET_PDEATHSIG``). What "ready" means differs between the
benches and the processes (an HTTP path that answers 200, or just a port that accepts), so it
is a separate call rather than part of starting.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from harness import PAGE_SIZE, _die_with_parent


class Proc:
    """One process group started in its own session; ``stop`` ends the whole group."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        log: str | None = None,
        port: int = 0,
    ) -> None:
        """``env`` is the whole environment (``None``: this process's); ``log`` the log file's
        name in ``workdir`` (``NAME.log`` unless given); ``port`` where it will listen, if the
        caller wants it remembered (:attr:`url`)."""
        self.name, self.workdir, self.port = name, workdir, port
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / (log or f"{name}.log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else dict(os.environ),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _exited(self) -> SystemExit:
        return SystemExit(f"{self.name} exited:\n{self.log.read_text(errors='replace')[-3000:]}")

    def wait_ready(self, port: int, path: str, timeout: float = 60) -> None:
        """Until ``GET path`` on ``port`` answers 200."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._exited()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception as e:  # not up yet
                last = str(e)
            time.sleep(0.1)
        raise SystemExit(f"{self.name} not ready after {timeout}s: {last}")

    def wait_port(self, port: int, timeout: float = 30) -> None:
        """Until ``port`` accepts a TCP connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._exited()
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"{self.name} did not start")

    def stop(self) -> None:
        """SIGTERM the group, then SIGKILL it if it has not exited within 10 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(10)
                return
            except subprocess.TimeoutExpired:
                continue


def read_rss_pss(pid: int) -> tuple[int, int]:
    """A process's RSS and PSS in bytes, from /proc (PSS splits shared pages among their
    sharers, so the PSS of several processes adds up to what they cost together)."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        rss = int(f.read().split()[1]) * PAGE_SIZE
    pss = 0
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith(b"Pss:"):
                pss = int(line.split()[1]) * 1024
                break
    return rss, pss

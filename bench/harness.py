"""Server processes for the benchmark: start, health-check, measure RSS, and always stop.

Each server runs in its own session (so its whole process tree is one process group
that can be signalled at once), with a fresh storage root and a registry:2-format
config file, on a free loopback port.  Every started server is remembered so that an
``atexit`` hook (and the signal handlers installed by :func:`install_signal_handlers`)
can stop whatever is still running, whatever way the harness ends.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from client import Http, ServerError

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1

_live: set[Server] = set()
_live_lock = threading.Lock()


class HarnessError(Exception):
    """The benchmark itself could not run (as opposed to a server misbehaving)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


CONFIG_TEMPLATE = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclass
class ServerSpec:
    """How to start one server: ``argv`` may contain ``{config}``, replaced by the config path."""

    name: str
    label: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_command(
        cls, name: str, label: str, command: str, env: dict[str, str] | None = None
    ) -> ServerSpec:
        return cls(name, label, shlex.split(command), dict(env or {}))

    def command(self) -> str:
        return " ".join(a if a == "{config}" else shlex.quote(a) for a in self.argv)


class Server:
    """A running server under test."""

    def __init__(self, spec: ServerSpec, workdir: Path, request_timeout: float) -> None:
        self.spec = spec
        self.name = spec.name
        self.workdir = workdir
        self.root = workdir / "storage"
        self.request_timeout = request_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, startup_timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir()
        self.port = free_port()
        config = self.workdir / "config.yml"
        config.write_text(CONFIG_TEMPLATE.format(root=self.root, port=self.port))
        argv = [a.replace("{config}", str(config)) for a in self.spec.argv]
        env = {**os.environ, **self.spec.env}
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # servers start before any thread does
                )
            except OSError as e:
                raise HarnessError(f"{self.name}: cannot start {argv[0]!r}: {e}") from e
        with _live_lock:
            _live.add(self)
        self._wait_ready(startup_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                self.check_alive()
            except ServerError as e:
                raise HarnessError(f"{self.name} did not start: {e}") from None
            try:
                with Http(self.host, self.port, timeout=2.0) as http:
                    resp = http.request("GET", "/v2/", expect=(200, 401))
                    if resp.status == 200:
                        return
                    last = f"status {resp.status}"
            except (OSError, ServerError) as e:
                last = str(e)
            time.sleep(0.1)
        raise HarnessError(
            f"{self.name} did not answer GET /v2/ within {timeout:.0f}s ({last})\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        if self.proc is None:
            raise HarnessError(f"{self.name} was never started")
        code = self.proc.poll()
        if code is not None:
            raise ServerError(f"{self.name} exited with code {code}\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no server log)"
        return "\n".join(f"  {self.name}| {line}" for line in text) or "(server log empty)"

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it and any straggler of the tree."""
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        for _ in range(2):  # the leader may be gone while workers linger
            stragglers = session_pids(pgid)
            if not stragglers and proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            for pid in stragglers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        with _live_lock:
            _live.discard(self)

    @property
    def proc_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # --- measurement ---------------------------------------------------------------------

    def http(self) -> Http:
        return Http(self.host, self.port, timeout=self.request_timeout)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def pids(self) -> list[int]:
        assert self.proc is not None
        return process_tree(self.proc.pid)

    def _tree_sum(self, read: Callable[[int], int]) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):  # exited meanwhile
                total += read(pid)
        return total

    def rss_bytes(self) -> int:
        """Sum of the resident set sizes of the server process and all its descendants.

        Pages that forked workers share are counted once per process that maps them."""
        return self._tree_sum(_rss)

    def drop_blob_data(self, digest: str) -> None:
        """Delete a blob's data from the storage root, between repetitions, untimed.

        Each upload repetition writes fresh data; kept, a full run leaves ~20 GiB in the page
        cache, and on these VMs writes got 2-3x slower for both servers once it held more than
        ~4 GiB (new guest memory is slow to touch), so later repetitions measured the VM. Both
        servers use the same layout, and nothing reads these blobs again.
        """
        algorithm, _, hexdigest = digest.partition(":")
        blobs = self.root / "docker/registry/v2/blobs" / algorithm
        data = blobs / hexdigest[:2] / hexdigest / "data"
        with contextlib.suppress(FileNotFoundError):
            data.unlink()

    def pss_bytes(self) -> int:
        """Sum of the proportional set sizes of the tree: each shared page is split among the
        processes that map it, so the sum is the memory the tree really occupies."""
        return self._tree_sum(_pss)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _proc_stats() -> Iterator[tuple[int, int, int]]:
    """(pid, ppid, session id) of every process."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        yield int(entry.name), int(fields[1]), int(fields[3])


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _proc_stats():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def session_pids(sid: int) -> list[int]:
    return [pid for pid, _, s in _proc_stats() if s == sid]


def stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop(grace=3.0)


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so that ``finally`` blocks stop the servers."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    atexit.register(stop_all)


class RssSampler:
    """Samples a server's RSS and PSS (see :meth:`Server.pss_bytes`) every ``interval`` seconds
    in a background thread."""

    def __init__(self, server: Server, interval: float = 0.05) -> None:
        self.server = server
        self.interval = interval
        self.samples: list[int] = []
        self.pss_samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        self.samples.append(self.server.rss_bytes())
        self.pss_samples.append(self.server.pss_bytes())

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    @property
    def peak_pss(self) -> int:
        return max(self.pss_samples, default=0)


def run_bounded(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a load generator to completion; it is killed if it overruns ``timeout``."""
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise HarnessError(f"{argv[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise ServerError(f"{argv[0]} did not finish within {timeout:.0f}s") from e


def spawn_all(commands: list[list[str]], timeout: float) -> list[str]:
    """Run several load-generator processes at once; return their stdouts."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for argv in commands:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        deadline = time.monotonic() + timeout
        outputs = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired as e:
                raise ServerError(f"{p.args!r} did not finish within {timeout:.0f}s") from e
            outputs.append(out)
        return outputs
    except FileNotFoundError as e:
        raise HarnessError(f"{e.filename} is not installed") from e
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

"""Shared backends for scale-out tests: an S3 endpoint (moto), Redis and an haproxy in front.

Each runs as a real process on a port from :func:`free_port`, in its own process group, and is
stopped with :func:`kill_process_group`, like the registry servers in :mod:`support.servers`.
Used by ``tests/s3`` and ``tests/scale``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from .servers import RegistryProcess, free_port, kill_process_group, listens

MOTO_ACCESS_KEY = "cargohold-test"
MOTO_SECRET_KEY = "cargohold-test-secret"
REGION = "us-east-1"


class _Process:
    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> Any:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                # ours, not a process that took the port since free_port() (servers.listens)
                if self.ready() and listens(self.proc.pid, self.port):
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            kill_process_group(proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-max_chars:].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def describe_log(self, max_chars: int = 4000) -> str:
        return f"--- {self.name} log ({self.log_path}) ---\n{self.log_tail(max_chars)}"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class S3Endpoint:
    """What a test needs of any S3 server: a client, fresh buckets, registry:2 config sections."""

    endpoint: str
    access_key = MOTO_ACCESS_KEY
    secret_key = MOTO_SECRET_KEY

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self, prefix: str = "cargohold") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def s3_params(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """A registry:2 ``storage.s3`` section for this endpoint (cargohold and the reference)."""
        return {
            "region": REGION,
            "regionendpoint": self.endpoint,
            "forcepathstyle": True,
            "bucket": bucket,
            "accesskey": self.access_key,
            "secretkey": self.secret_key,
            "secure": False,
            "v4auth": True,
            **extra,
        }

    def storage_section(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """``config["storage"]`` for ``make_registry``: drops the default filesystem driver."""
        return {"filesystem": None, "s3": self.s3_params(bucket, **extra)}

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        client = self.client()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys


class MotoServer(_Process, S3Endpoint):
    """``python -m moto.server``: the S3 wire protocol, multipart and presigned URLs included."""

    name = "moto"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def endpoint(self) -> str:  # type: ignore[override]
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return requests.get(f"{self.endpoint}/moto-api/", timeout=2).status_code < 500


class RedisServer(_Process):
    """``redis-server`` with persistence off, on its own port; restartable on the same port."""

    name = "redis"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def command_line(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


class Haproxy(_Process):
    """haproxy round-robining *every request* (no keep-alive reuse) over the given backends."""

    name = "haproxy"

    def __init__(self, workdir: Path, backends: Sequence[int], retries: int = 0) -> None:
        super().__init__(workdir)
        self.backends = list(backends)
        self.retries = retries
        self.config_path = workdir / "haproxy.cfg"
        self.stats_port = free_port()

    def write_config(self) -> None:
        servers = "\n".join(
            f"    server r{i} 127.0.0.1:{port} check inter 500ms fall 2 rise 1"
            for i, port in enumerate(self.backends)
        )
        self.config_path.write_text(
            f"""global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    option http-server-close
    http-reuse never
    retries {self.retries}
    option redispatch

frontend registry
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /debug/health
    http-check expect status 200
{servers}

listen stats
    bind 127.0.0.1:{self.stats_port}
    stats enable
    stats uri /stats
"""
        )

    def command(self) -> list[str]:
        binary = haproxy_binary()
        assert binary is not None
        return [binary, "-db", "-f", str(self.config_path)]

    def start(self, timeout: float = 30.0) -> Haproxy:
        self.write_config()
        check = subprocess.run(
            [*self.command(), "-c"], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy config invalid:\n{check.stdout}\n{check.stderr}")
        super().start(timeout)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return requests.get(f"{self.url}/v2/", timeout=2).status_code == 200

    def backend_states(self) -> Mapping[str, str]:
        """``{"r0": "UP", ...}`` from the stats CSV."""
        text = requests.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        states: dict[str, str] = {}
        for line in text.splitlines():
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "replicas" and cols[1].startswith("r"):
                states[cols[1]] = cols[17]
        return states


@dataclass
class ReplicaSet:
    replicas: list[RegistryProcess]
    proxy: Haproxy
    storage: str
    bucket: str | None = None
    root: Path | None = None
    extra: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def host(self) -> str:
        return self.proxy.host

    def describe_log(self, max_chars: int = 3000) -> str:
        parts = [r.describe_log(max_chars) for r in self.replicas]
        return "\n".join([*parts, self.proxy.describe_log(max_chars)])

    def replicas_of_upload(self) -> dict[str, set[int]]:
        """upload id -> indexes of the replicas that served a request of that upload."""
        pattern = re.compile(r'"[A-Z]+ /v2/\S+/blobs/uploads/([0-9a-f-]{36})')
        seen: dict[str, set[int]] = {}
        for i, replica in enumerate(self.replicas):
            for match in pattern.finditer(replica.log_tail(50_000_000)):
                seen.setdefault(match.group(1), set()).add(i)
        return seen


# --------------------------------------------------------------------------- resilient uploads

RETRY_STATUSES = frozenset({500, 502, 503, 504})


def _absolute(base: str, location: str) -> str:
    return location if location.startswith(("http://", "https://")) else base + location


def _received(resp: requests.Response) -> int:
    """Bytes an upload holds, from the ``Range: 0-N`` of a 202/204 (``0-0`` is taken as 0)."""
    end = int(resp.headers["Range"].split("-")[1])
    return end + 1 if end else 0


def chunked_upload(
    base: str,
    repo: str,
    data: bytes,
    chunk: int,
    *,
    attempts: int = 30,
    pause: float = 0.2,
    timeout: float = 60,
    log: list[str] | None = None,
) -> str:
    """Push ``data`` as POST, PATCHes of ``chunk`` bytes with ``Content-Range``, PUT ?digest=.

    Behaves like a careful client behind a load balancer: a request that fails (connection
    error, 5xx) is retried after asking the upload's status (GET) where to resume; a chunk the
    registry already has (416) is skipped the same way. Returns the digest; raises when
    ``attempts`` retries are exhausted.
    """
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    http = requests.Session()
    http.headers["Connection"] = "close"  # a new connection (and balancer pick) per request
    failures = 0

    def retry(what: str, detail: object) -> None:
        nonlocal failures
        failures += 1
        if log is not None:
            log.append(f"{repo}: {what}: {detail}")
        if failures > attempts:
            raise AssertionError(f"{repo}: giving up after {failures} failures; last: {detail}")
        time.sleep(pause)

    while True:
        try:
            r = http.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=timeout)
        except requests.RequestException as e:
            retry("POST", e)
            continue
        if r.status_code == 202:
            location = _absolute(base, r.headers["Location"])
            break
        retry("POST", r.status_code)

    offset = 0
    while offset < len(data):
        piece = data[offset : offset + chunk]
        try:
            r = http.patch(
                location,
                data=piece,
                headers={
                    "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                    "Content-Type": "application/octet-stream",
                },
                timeout=timeout,
            )
        except requests.RequestException as e:
            r = None
            retry("PATCH", e)
        if r is not None and r.status_code == 202:
            location = _absolute(base, r.headers["Location"])
            offset = _received(r)
            continue
        if r is not None:
            if r.status_code not in (*RETRY_STATUSES, 416):
                raise AssertionError(f"{repo}: PATCH -> {r.status_code} {r.text[:500]}")
            retry("PATCH", f"{r.status_code} {r.text[:200]}")
        while True:  # where to resume
            try:
                st = http.get(location, timeout=timeout)
            except requests.RequestException as e:
                retry("GET status", e)
                continue
            if st.status_code == 204:
                location = _absolute(base, st.headers["Location"])
                offset = _received(st)
                break
            if st.status_code not in RETRY_STATUSES:
                raise AssertionError(f"{repo}: upload status -> {st.status_code} {st.text[:500]}")
            retry("GET status", st.status_code)

    sep = "&" if "?" in location else "?"
    while True:
        try:
            r = http.put(f"{location}{sep}digest={digest}", timeout=timeout)
        except requests.RequestException as e:
            retry("PUT", e)
        else:
            if r.status_code == 201:
                assert r.headers["Docker-Content-Digest"] == digest
                return digest
            if r.status_code == 404:
                # The first PUT may have completed before its answer was lost.
                head = http.head(f"{base}/v2/{repo}/blobs/{digest}", timeout=timeout)
                if head.status_code == 200:
                    return digest
            if r.status_code not in RETRY_STATUSES:
                raise AssertionError(f"{repo}: PUT -> {r.status_code} {r.text[:500]}")
            retry("PUT", f"{r.status_code} {r.text[:200]}")

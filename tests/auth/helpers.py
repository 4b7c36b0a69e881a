"""Helpers for the security tests: ``cargohold cert``/``htpasswd`` wrappers, the test users
and policy, an HTTPS registry starter whose readiness probe uses the test CA (and a client
certificate for mutual TLS), and the check that no secret reached a log."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests
from support.servers import RegistryProcess, ServerStartError, cargohold_env

PASSWORDS = {
    "alice": "alice-Secr3t-pw",  # admin
    "bob": "bob-R3ad-only-pw",  # read-only
    "carol": "carol-Dev-pw-77",  # developer group
}


@dataclass(frozen=True)
class Pki:
    """What ``cargohold cert`` wrote: a CA, a server pair, a client pair."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_output: str
    client_output: str


def cargohold_cli(
    *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m cargohold ARGS`` with ``src/`` on the path."""
    proc = subprocess.run(
        [sys.executable, "-m", "cargohold", *args],
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, **cargohold_env()},
        timeout=60,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"cargohold {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def make_pki(out: Path) -> Pki:
    server = cargohold_cli("cert", "--out", str(out), "--host", "127.0.0.1", "--host", "localhost")
    client = cargohold_cli(
        "cert", "--out", str(out), "--client", "ci-runner", "--host", "127.0.0.1"
    )
    return Pki(
        dir=out,
        ca=out / "ca.crt",
        server_cert=out / "server.crt",
        server_key=out / "server.key",
        client_cert=out / "ci-runner.cert",
        client_key=out / "ci-runner.key",
        server_output=server.stdout,
        client_output=client.stdout,
    )


def add_user(path: Path, user: str, password: str) -> None:
    """``cargohold htpasswd add --password-stdin`` (cost 4: tests need no slow hashes)."""
    cargohold_cli(
        "htpasswd", "add", str(path), user, "--password-stdin", "--cost", "4", input=password + "\n"
    )


#: The policy most tests use: alice admin, bob reads team/**, carol (dev) writes team/**,
#: everyone may pull public/**, and each user owns ``home/{user}/**``.
POLICY: dict[str, Any] = {
    "admins": ["alice"],
    "groups": {"dev": ["carol"]},
    "rules": [
        {"repositories": ["public/**"], "anonymous": True, "actions": ["pull"]},
        {"repositories": ["team/**"], "users": ["bob"], "actions": ["pull"]},
        {"repositories": ["team/**"], "groups": ["dev"], "actions": ["pull", "push"]},
        {"repositories": ["home/{user}/**"], "authenticated": True, "actions": ["*"]},
    ],
}


class SecureRegistry(RegistryProcess):
    """A cargohold over HTTPS; readiness is probed with the CA and, for mTLS, a client cert."""

    def __init__(
        self, *args: Any, ca: Path, client: tuple[Path, Path] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, ready_scheme="https", **kwargs)
        self.ca = ca
        self.client = client

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", str(self.ca))
        if self.client is not None:
            kwargs.setdefault("cert", (str(self.client[0]), str(self.client[1])))
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + path, **kwargs)

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with {self.proc.returncode}\n{self.describe_log()}"
                )
            try:
                if self.get("/v2/", timeout=2).status_code in (200, 401):
                    return
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise ServerStartError(f"{self.name} not ready ({last})\n{self.describe_log()}")


class SecureFactory(Protocol):
    def __call__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        client: tuple[Path, Path] | None = None,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
    ) -> SecureRegistry: ...


def tls_config(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"certificate": str(pki.server_cert), "key": str(pki.server_key), **extra}


def assert_no_secrets(log_path: Path, secrets: list[str]) -> None:
    """None of ``secrets`` (passwords, tokens, Basic credentials) appears in the log."""
    text = log_path.read_text(errors="replace")
    for secret in secrets:
        assert secret not in text, f"a secret leaked into {log_path}"
        if ":" in secret:
            encoded = base64.b64encode(secret.encode()).decode()
            assert encoded not in text, f"Basic credentials leaked into {log_path}"
    assert "authorization:" not in text.lower(), f"an Authorization header was logged: {log_path}"
